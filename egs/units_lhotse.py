"""Units for lhotse and icefall: a CutSet in, the same cuts with a ``units`` TemporalArray out, batched by lhotse.

    python egs/units_lhotse.py [--corpus ../shared/data/speech-mini] [--model exp/codec/model.pt] [--work DIR]

lhotse's own LibriSpeech recipe makes the cuts of speech-mini's dev-clean-2; ``vqaudio extract-units --data
cuts.jsonl.gz --format lhotse`` writes ``cuts.jsonl.gz`` whose cuts carry ``units``, shape ``(frames, levels)``;
lhotse reads them back (``cut.load_custom``, ``collate_custom_field`` with ``pad_value=-1``, since 0 is a unit),
as an icefall dataset would. Without --model, a codec of codec_tiny.yaml's architecture with random weights
stands in (the files are the same, the units meaningless). Needs ``pip install 'vqaudio[lhotse]'``.
"""

from __future__ import annotations

import pathlib

from units_common import codec_file, extract_units, parse_args, split_dir


def main() -> None:
    args, work = parse_args(__doc__, "units_lhotse_")
    try:
        from lhotse import CutSet, load_manifest
        from lhotse.dataset.collation import collate_custom_field
        from lhotse.recipes import prepare_librispeech
    except ImportError as err:
        raise SystemExit(f"this example needs lhotse ({err}): pip install 'vqaudio[lhotse]'") from None
    split_dir(pathlib.Path(args.corpus), "dev-clean-2")
    manifests = prepare_librispeech(pathlib.Path(args.corpus) / "LibriSpeech", dataset_parts=["dev-clean-2"])
    parts = manifests["dev-clean-2"]
    cuts = CutSet.from_manifests(recordings=parts["recordings"], supervisions=parts["supervisions"])
    cuts.to_file(work / "cuts_dev-clean-2.jsonl.gz")

    model = codec_file(args.model, work)
    out = work / "units"
    extract_units(
        "--model",
        str(model),
        "--data",
        str(work / "cuts_dev-clean-2.jsonl.gz"),
        "--out",
        str(out),
        "--format",
        "lhotse",
    )

    cuts = load_manifest(out / "cuts.jsonl.gz")
    for cut in cuts:
        units = cut.load_custom("units")  # (frames, levels), int16
        text = cut.supervisions[0].text if cut.supervisions else ""
        print(
            f"{cut.id}: {cut.duration:.2f} s, units {tuple(units.shape)} every {cut.units.frame_shift * 1000:g} ms, "
            f"level 0 starts {units[:8, 0].tolist()}  {text[:40]!r}"
        )
    batch, lengths = collate_custom_field(cuts, "units", pad_value=-1)
    print(f"a batch of {len(cuts)} cuts: units {tuple(batch.shape)} (padded with -1), lengths {lengths.tolist()}")
    print(f"files in {work}")


if __name__ == "__main__":
    main()
