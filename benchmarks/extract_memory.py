"""Peak memory of one `vqaudio extract-units` job: over 1 and over N long files, and over the corpus listed
1, 4, 16 ... times, split into the extraction and the merge. Memory should follow ``--batch-seconds``, not the
number or length of the files.

    python benchmarks/extract_memory.py [--minutes 5] [--files 8] [--threads 2]
    python benchmarks/extract_memory.py --repeats 1 4 16 --model exp/codec/model.pt   # 45 min, 3 h, 12 h

Each long file is speech-mini's utterances concatenated to ``--minutes`` (a different rotation per file);
the model is the default codec (random weights: memory does not depend on them) unless ``--model`` names one.
Each run is a fresh process; its peak resident memory comes from the kernel's accounting of that child
(``wait4``). With ``--repeats`` every file of the corpus is listed N times (ids ``<stem>-r<k>``) and the job
writes ``--formats``; its resident memory is read from ``/proc`` every 0.2 s, before and after the job logs
that it is merging.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
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


def sampled_run(cmd: list[str]) -> tuple[float, float, float]:
    """(peak RSS in MiB before the job logs ``merging``, peak after it, wall seconds) of ``cmd``, sampled from
    ``/proc/<pid>/status`` every 0.2 s."""
    t0 = time.time()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    merging = threading.Event()
    tail: list[str] = []

    def watch() -> None:
        for line in proc.stderr:
            tail[:] = (tail + [line])[-20:]
            if "merging" in line:
                merging.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    peaks = [0.0, 0.0]
    while proc.poll() is None:
        with contextlib.suppress(OSError, StopIteration):
            with open(f"/proc/{proc.pid}/status") as f:
                rss = int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024
            phase = int(merging.is_set())
            peaks[phase] = max(peaks[phase], rss)
        time.sleep(0.2)
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {''.join(tail)[-1000:]}")
    return peaks[0], peaks[1], time.time() - t0


def corpus_lengths(args, model: pathlib.Path, tmp: pathlib.Path) -> None:
    """One job over the corpus listed ``r`` times for each of ``args.repeats``: its peak RSS extracting and
    merging."""
    files = sorted(args.corpus.rglob("*.flac"), key=lambda f: f.stem)
    if not files:
        raise SystemExit(f"no FLAC files under {args.corpus}")
    seconds = sum(sf.info(str(f)).duration for f in files)
    print(f"{len(files)} files ({seconds / 60:.1f} min) listed N times, --format {args.formats}, {args.threads} thr")
    print("| times listed | audio (h) | utterances | peak RSS extracting (MiB) | peak RSS merging (MiB) | wall (s) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in args.repeats:
        data = tmp / f"corpus{r}"
        data.mkdir()
        ids = sorted((f"{f.stem}-r{k}", f) for k in range(r) for f in files)
        (data / "wav.scp").write_text("".join(f"{utt} {f}\n" for utt, f in ids))
        cmd = [sys.executable, "-m", "vqaudio.cli.main", "extract-units", "--model", str(model), "--data", str(data)]
        cmd += ["--out", str(tmp / f"units_r{r}"), "--threads", str(args.threads), "--format", args.formats]
        cmd += ["--batch-seconds", str(args.batch_seconds)] if args.batch_seconds else []
        extracting, merging, wall = sampled_run(cmd)
        hours = r * seconds / 3600
        print(f"| {r} | {hours:.2f} | {len(ids)} | {extracting:.0f} | {merging:.0f} | {wall:.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=DEFAULT)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each long file")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--batch-seconds",
        type=float,
        help="audio per batch (default: 60 with long files, extract-units' own with --repeats)",
    )
    parser.add_argument("--model", type=pathlib.Path, help="a codec model.pt (default: the default codec, random)")
    parser.add_argument(
        "--repeats", type=int, nargs="+", help="instead of long files: the corpus listed N times, for each N given"
    )
    parser.add_argument("--formats", default="kaldi,hf", help="--format of the --repeats jobs")
    args = parser.parse_args()
    if args.repeats and min(args.repeats) < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    if args.repeats:  # the job's own batch length unless one is given
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            model = args.model or Codec().save_pretrained(pathlib.Path(tmp) / "model.pt")
            corpus_lengths(args, model, pathlib.Path(tmp))
        return
    args.batch_seconds = args.batch_seconds or 60.0
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
        model = args.model or Codec().save_pretrained(tmp / "model.pt")
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
