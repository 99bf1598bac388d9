"""Unit extraction throughput (hours of audio per minute) and memory over the job, on real speech.

    python benchmarks/extract.py [--corpus ../shared/data/speech-mini] [--threads 2] [--jobs N]

Builds a Kaldi data dir over every FLAC file of the corpus (45 min of speech in speech-mini), saves the
default codec (random weights: speed does not depend on them), then measures two ways of using the
cores: (1) one job with `--threads` torch threads, in this process, sampling resident memory every
0.2 s so growth with the number of utterances would show; (2) `--jobs` (default: `--threads`) jobs of one
thread each (`vqaudio extract-units --nj N --job I --threads 1`, run at once, the last one merging), wall
time from start to merged output.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import threading
import time

import torch

from vqaudio import Codec
from vqaudio.units import extract_units

DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "speech-mini"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=DEFAULT)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, help="one-thread jobs of the second measurement (default --threads)")
    parser.add_argument("--batch-seconds", type=float, default=60.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    files = sorted(args.corpus.rglob("*.flac"))
    if not files:
        raise SystemExit(f"no FLAC files under {args.corpus}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = tmp / "data"
        data.mkdir()
        (data / "wav.scp").write_text("".join(f"{f.stem} {f}\n" for f in sorted(files, key=lambda p: p.stem)))
        torch.manual_seed(0)
        model = Codec().save_pretrained(tmp / "model.pt")
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.time(), rss_mib()))
                time.sleep(0.2)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        res = extract_units(
            model, data, tmp / "units", formats=("kaldi", "fairseq"), batch_seconds=args.batch_seconds, progress=False
        )
        stop.set()
        thread.join()
        samples.append((time.time(), rss_mib()))  # the job's end, however short it was
        jobs = args.jobs or args.threads
        cmd = [
            sys.executable,
            "-m",
            "vqaudio.cli.main",
            "extract-units",
            "--model",
            str(model),
            "--data",
            str(data),
            "--out",
            str(tmp / "units_jobs"),
            "--format",
            "kaldi,fairseq",
            "--nj",
            str(jobs),
            "--threads",
            "1",
        ]
        env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
        t0 = time.time()
        procs = [
            subprocess.Popen(cmd + ["--job", str(j)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for j in range(1, jobs + 1)
        ]
        codes = [p.wait() for p in procs]
        jobs_wall = time.time() - t0
        same = (tmp / "units_jobs" / "units").read_bytes() == (tmp / "units" / "units").read_bytes()
    hours = res.audio_seconds / 3600
    per_min = hours / (res.wall_seconds / 60)
    quarter = [m for _, m in samples[len(samples) // 4 : len(samples) // 2]]
    last = [m for _, m in samples[-len(samples) // 4 :]]
    print(f"{res.extracted} utterances, {hours * 60:.1f} min of audio, {res.failed} failed, {args.threads} threads")
    print(f"wall {res.wall_seconds:.1f} s: {per_min:.2f} h of audio per minute = {per_min * 60:.0f} h per hour")
    print(
        f"resident memory: peak {max(m for _, m in samples):.0f} MiB; median over the 2nd quarter of the job "
        f"{sorted(quarter)[len(quarter) // 2]:.0f} MiB, over the last quarter {sorted(last)[len(last) // 2]:.0f} MiB"
    )
    per_min_jobs = hours / (jobs_wall / 60)
    print(
        f"{jobs} jobs x 1 thread (exit codes {codes}, units identical to the one-job run: {same}): wall "
        f"{jobs_wall:.1f} s including {jobs} process starts: {per_min_jobs:.2f} h of audio per minute = "
        f"{per_min_jobs * 60:.0f} h per hour"
    )


if __name__ == "__main__":
    main()
