"""Units for ESPnet (asr2) and fairseq (HuBERT-style label files), read back by their own readers.

    python egs/units_espnet_fairseq.py [--corpus ../shared/data/speech-mini] [--model exp/codec/model.pt] [--work DIR]

``vqaudio extract-units --format kaldi,fairseq,npy`` on a Kaldi data dir of speech-mini's dev-clean-2 writes
``units`` (``utt u1 u2 ...``, level 0), ``codes.scp`` + ``npy/<utt>.npy`` (``(frames, levels)``) and
``<set>.tsv`` + ``<set>.km``. The example puts ``units`` where ESPnet's asr2.sh reads k-means labels
(``dump/extracted/<feature>/layer<L>/<set>/pseudo_labels_km<K>.txt``; asr2 itself removes repeats with
``--src_case rm`` and trains the BPE) and reads it, and the npy features, with ESPnet's readers
(``pip install --no-deps espnet typeguard`` is enough for them); then it adds the ``dict.km.txt`` fairseq's
HuBERT task wants and reads ``.tsv`` / ``.km`` with fairseq's loaders when fairseq is installed. Without
--model, a codec of codec_tiny.yaml's architecture with random weights stands in.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
from units_common import codec_file, extract_units, kaldi_data_dir, parse_args


def espnet_hand_off(out: pathlib.Path, work: pathlib.Path, set_name: str) -> None:
    """Place ``units`` as asr2's k-means labels and read them, and ``codes.scp``, with ESPnet's readers."""
    info = json.loads((out / "units.json").read_text())
    labels = work / "espnet" / "dump" / "extracted" / "vqaudio" / "layer0" / set_name
    labels.mkdir(parents=True, exist_ok=True)
    label_file = labels / f"pseudo_labels_km{info['codebook_size']}.txt"
    shutil.copyfile(out / "units", label_file)
    print(f"asr2 labels: {label_file}")
    print(
        f"  ./asr2.sh --kmeans_feature vqaudio/0 --nclusters {info['codebook_size']} --src_case rm "
        f"--src_lang vqaudio_0_km{info['codebook_size']} --stage 4 --kmeans_opts '--stage 5' ..."
    )
    try:
        from espnet2.fileio.npy_scp import NpyScpReader
        from espnet2.fileio.read_text import load_num_sequence_text
    except ImportError as err:
        print(f"ESPnet's readers are not installed ({err}): pip install --no-deps espnet typeguard")
        return
    level0 = load_num_sequence_text(label_file, loader_type="text_int")
    arrays = NpyScpReader(out / "codes.scp")
    for utt, units in level0.items():
        codes = arrays[utt]  # (frames, levels)
        assert np.array_equal(codes[:, 0], units), utt
        print(f"ESPnet reads {utt}: {len(units)} units, npy {codes.shape}, starts {list(units[:8])}")


def fairseq_hand_off(out: pathlib.Path, set_name: str) -> None:
    """Write ``dict.km.txt`` and read ``<set>.tsv`` / ``<set>.km`` with fairseq's HuBERT loaders."""
    info = json.loads((out / "units.json").read_text())
    (out / "dict.km.txt").write_text("".join(f"{k} 1\n" for k in range(info["codebook_size"])))
    print(f"fairseq: task.data={out} task.label_dir={out} task.labels='[km]' (train/valid named {set_name}.*)")
    try:
        from fairseq.data.audio.hubert_dataset import load_audio, load_label
    except ImportError as err:
        print(f"fairseq is not installed ({err}); its HuBERT task reads these files as they are")
        return
    root, names, inds, total, sizes = load_audio(str(out / f"{set_name}.tsv"), max_keep=None, min_keep=None)
    labels = load_label(str(out / f"{set_name}.km"), inds, total)
    for name, size, line in zip(names, sizes, labels, strict=True):
        print(f"fairseq reads {name}: {size} samples, {len(line.split())} units")


def main() -> None:
    args, work = parse_args(__doc__, "units_espnet_")
    data = kaldi_data_dir(pathlib.Path(args.corpus), "dev-clean-2", work)
    model = codec_file(args.model, work)
    out = work / "units"
    extract_units("--model", str(model), "--data", str(data), "--out", str(out), "--format", "kaldi,fairseq,npy")
    espnet_hand_off(out, work, data.name)
    fairseq_hand_off(out, data.name)
    print(f"files in {work}")


if __name__ == "__main__":
    main()
