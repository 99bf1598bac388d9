"""SSL unit extraction against the bare transformers forward of the same model on the same audio.

    python benchmarks/extract_ssl.py [--corpus ../shared/data/speech-mini] [--minutes 3] [--threads 1 2]

Builds a base-size HuBERT with random weights (transformers' ``HubertConfig()`` defaults: 12 layers of 768,
group norm in the first conv layer, as hubert-base; speed does not depend on the weights) in a temporary
folder, trains a k-means unit model on its layer ``--layer`` with the library (``train_kmeans`` on
``--kmeans-utts`` utterances, 5 Lloyd iterations), then times, on ``--minutes`` of the corpus' FLAC files (a
fixed random pick, so lengths vary as in the corpus; a Kaldi data dir with ``wav.scp`` and ``utt2dur``, as
the recipes write), with each of ``--threads`` torch threads in this process:

- bare: the transformers forward of the same model cut after layer ``--layer`` (as ``SSLFeatures`` runs it),
  one utterance at a time, the audio already in memory;
- extract-units: ``vqaudio.units.extract_units`` with the unit model (read, features, k-means, write) as it
  runs by default (on the CPU each utterance alone, equal lengths batched): its job loop
  (``ExtractResult.wall_seconds``) and the whole call (loading and checking the models, merging the outputs
  besides);
- padded batches: its job loop with the padding bound of CUDA (``vqaudio.units.ssl.MAX_PADDING``, 10 %) on the
  CPU too: neighbours by length in right-padded batches, each utterance's frames as alone.

Each row is the best of ``--repeats`` runs, the rows of a repeat measured one after another. Prints a markdown
table: seconds, hours of audio per hour, and the ratio to bare, then the share of frames whose units the
padded batches and the default run agree on. ``--tiny`` builds a small HuBERT (a smoke test).
"""

from __future__ import annotations

import argparse
import pathlib
import tempfile
import time
from unittest import mock

import numpy as np
import soundfile as sf
import torch
import transformers

from vqaudio.units import extract_units, read_levels, ssl
from vqaudio.units.kmeans import KMeansConfig, train_kmeans

DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "speech-mini"
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def pick(corpus: pathlib.Path, minutes: float) -> list[pathlib.Path]:
    """FLAC files of ``corpus`` in a fixed random order, up to ``minutes`` of audio (at least one)."""
    files = sorted(corpus.rglob("*.flac"))
    if not files:
        raise SystemExit(f"no FLAC files under {corpus}")
    chosen, seconds = [], 0.0
    for i in np.random.default_rng(0).permutation(len(files)):
        chosen.append(files[i])
        seconds += sf.info(files[i]).duration
        if seconds >= minutes * 60:
            break
    return chosen


def data_dir(path: pathlib.Path, files: list[pathlib.Path]) -> pathlib.Path:
    path.mkdir(parents=True)
    files = sorted(files, key=lambda f: f.stem)
    (path / "wav.scp").write_text("".join(f"{f.stem} {f}\n" for f in files))
    (path / "utt2dur").write_text("".join(f"{f.stem} {sf.info(f).duration:.4f}\n" for f in files))
    return path


def bare_seconds(model_dir: pathlib.Path, layer: int, wavs: list[np.ndarray], device: str = "cpu") -> float:
    """Seconds of the transformers forward over ``wavs``, one at a time, the model cut after ``layer`` (on CUDA
    in bf16 autocast, as ``SSLFeatures`` runs it there)."""
    net = transformers.HubertModel.from_pretrained(model_dir).eval().to(device)
    net.encoder.layers = net.encoder.layers[:layer]
    cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        t0 = time.perf_counter()
        for w in wavs:
            net(torch.from_numpy(w)[None].to(device))
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=DEFAULT)
    parser.add_argument("--minutes", type=float, default=3.0, help="audio timed (default 3)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--layer", type=int, default=6, help="the unit layer (default 6)")
    parser.add_argument("--k", type=int, default=100, help="units (default 100)")
    parser.add_argument("--kmeans-utts", type=int, default=4, help="utterances k-means trains on (default 4)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each row; the best is shown (default 2)")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer HuBERT of width 32 instead of base size")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (benchmarks/gpu.sh)")
    args = parser.parse_args()
    files = pick(args.corpus, args.minutes)
    wavs = [sf.read(f, dtype="float32")[0] for f in files]
    if any(sf.info(f).samplerate != 16000 for f in files):
        raise SystemExit(f"{args.corpus}: the bare forward needs 16 kHz audio")
    audio = sum(w.shape[0] for w in wavs) / 16000
    layer = min(args.layer, TINY["num_hidden_layers"]) if args.tiny else args.layer
    rows: dict[tuple[int, str], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        torch.manual_seed(0)
        config = transformers.HubertConfig(**TINY) if args.tiny else transformers.HubertConfig()
        transformers.HubertModel(config).eval().save_pretrained(tmp / "hubert")
        data = data_dir(tmp / "data", files)
        train = data_dir(tmp / "train", files[: args.kmeans_utts])
        cfg = KMeansConfig(feature="ssl", k=args.k, ssl_model=str(tmp / "hubert"), ssl_layer=layer, standardize=False)
        train_kmeans(train, tmp / "km", cfg, iters=5, progress=False)
        runs = 0

        def extract(threads: int, label: str, whole_call: bool) -> None:
            nonlocal runs
            runs += 1
            t0 = time.perf_counter()
            res = extract_units(tmp / "km", data, tmp / f"units{runs}", device=args.device, progress=False)
            times = [(label, res.wall_seconds)] + [(f"{label}, whole call", time.perf_counter() - t0)] * whole_call
            for key, seconds in times:
                rows[threads, key] = min(rows.get((threads, key), float("inf")), seconds)
            units[label] = {utt: levels[0] for utt, levels in read_levels(tmp / f"units{runs}").items()}

        units: dict[str, dict] = {}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for _ in range(args.repeats):
                bare = bare_seconds(tmp / "hubert", layer, wavs, args.device)
                rows[threads, "bare"] = min(rows.get((threads, "bare"), float("inf")), bare)
                extract(threads, "extract-units", whole_call=True)
                with mock.patch.dict(ssl.MAX_PADDING, cpu=ssl.MAX_PADDING["cuda"]):
                    extract(threads, "extract-units, padded batches", whole_call=False)
    batched, alone = units["extract-units, padded batches"], units["extract-units"]
    same = sum(a == b for u in alone for a, b in zip(batched[u], alone[u], strict=True))
    frames = sum(len(u) for u in alone.values())
    size = "tiny HuBERT" if args.tiny else "HuBERT base (HubertConfig())"
    print(f"{len(files)} utterances, {audio / 60:.2f} min of audio; {size}, layer {layer}, K = {args.k}")
    print()
    print("| threads | run | seconds | h of audio per h | ratio to bare |")
    print("|---:|---|---:|---:|---:|")
    for (threads, label), seconds in rows.items():
        ratio = seconds / rows[threads, "bare"]
        print(f"| {threads} | {label} | {seconds:.2f} | {audio / seconds:.1f} | {ratio:.3f} |")
    print()
    print(
        f"units of padded batches equal to the default run's: {same} of {frames} frames ({100 * same / frames:.2f} %)"
    )


if __name__ == "__main__":
    main()
