"""Peak memory of one `vqaudio extract-units` job over 1 and over N long files: memory should follow
``--batch-seconds``, not the number or length of the files.

    python benchmarks/extract_memory.py [--minutes 5] [--files 8] [--threads 2]

Each long file is speech-mini's utterances concatenated to ``--minutes`` (a different rotation per file);
the model is the default codec (random weights: memory does not depend on them). Each run is a fresh
process; its peak resident memory comes from the kernel's accounting of that child (``wait4``).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

from vqaudio import Codec

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "speech-mini"


def run(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``cmd`` run as a child process."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({status})")
    return usage.ru_maxrss / 1024, time.time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=DEFAULT)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each long file")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    args = parser.parse_args()
    utts = [sf.read(f, dtype="float32")[0] for f in sorted(args.corpus.rglob("*.flac"))[:60]]
    if not utts:
        raise SystemExit(f"no FLAC files under {args.corpus}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        target = int(args.minutes * 60 * 16000)
        paths = []
        for i in range(args.files):
            order = utts[i:] + utts[:i]
            wav = np.concatenate(order * (target // sum(len(u) for u in order) + 1))[:target]
            paths.append(tmp / f"long{i}.flac")
            sf.write(paths[-1], wav, 16000)
        torch.manual_seed(0)
        model = Codec().save_pretrained(tmp / "model.pt")
        print(f"{args.files} files of {args.minutes:g} min, --batch-seconds {args.batch_seconds:g}, {args.threads} thr")
        print("| files in the job | audio (min) | peak RSS (MiB) | wall (s) |")
        print("|---:|---:|---:|---:|")
        for n in (1, args.files):
            data = tmp / f"data{n}"
            data.mkdir()
            (data / "wav.scp").write_text("".join(f"long{i} {paths[i]}\n" for i in range(n)))
            cmd = [
                sys.executable,
                "-m",
                "vqaudio.cli.main",
                "extract-units",
                "--model",
                str(model),
                "--data",
                str(data),
            ]
            cmd += ["--out", str(tmp / f"units{n}"), "--threads", str(args.threads)]
            cmd += ["--batch-seconds", str(args.batch_seconds)]
            peak, wall = run(cmd)
            print(f"| {n} | {n * args.minutes:g} | {peak:.0f} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
