"""Units for Hugging Face ``datasets``: parquet shards with id, speaker, text and one unit list per level.

    python egs/units_hf.py [--corpus ../shared/data/speech-mini] [--model exp/codec/model.pt] [--work DIR]

The LibriSpeech recipe's data preparation makes a Kaldi data dir of speech-mini's dev-clean-2;
``vqaudio extract-units --format hf`` writes ``data/<split>-*.parquet`` and a dataset card, and
``datasets.load_dataset`` reads them as a speech-LM or TTS training set would. Without --model, a codec of
codec_tiny.yaml's architecture with random weights stands in. Needs ``pip install 'vqaudio[hf]'``.
"""

from __future__ import annotations

import os
import pathlib

from units_common import codec_file, extract_units, kaldi_data_dir, parse_args


def main() -> None:
    args, work = parse_args(__doc__, "units_hf_")
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_cache"))  # before datasets is imported
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise SystemExit(f"this example needs datasets ({err}): pip install 'vqaudio[hf]'") from None
    data = kaldi_data_dir(pathlib.Path(args.corpus), "dev-clean-2", work)
    model = codec_file(args.model, work)
    out = work / "units"
    extract_units("--model", str(model), "--data", str(data), "--out", str(out), "--format", "hf")

    units = load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
    print(units)
    for row in units:
        levels = row["units"]  # one list per level
        print(
            f"{row['id']} (speaker {row['speaker']}): {len(levels)} levels x {len(levels[0])} frames at "
            f"{row['frame_rate']:g} Hz, level 0 starts {levels[0][:8]}  {(row['text'] or '')[:40]!r}"
        )
    torch_view = units.with_format("torch", columns=["units"])
    print(f"as torch: {tuple(torch_view[0]['units'].shape)} (levels, frames); codec {units[0]['codec'][:12]}...")
    print(f"card: {out / 'README.md'}; load_dataset({str(out)!r}) reads the same rows")


if __name__ == "__main__":
    main()
