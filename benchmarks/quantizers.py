"""Quantizer throughput and peak memory: vqaudio against vector-quantize-pytorch, in one run.

Speed: both implementations in one fresh process, steps alternating (A, B, A, B, ...), median step
each, so drifts in machine speed hit both alike. Memory: each implementation in its own process, peak
RSS growth over three steps after a warm-up (high-water RSS minus RSS after building the model and
inputs), with glibc's mmap threshold pinned at 64 KiB so freed tensors leave RSS at once and the peak follows live
tensors, not allocator caching; identical settings for both implementations).

    python benchmarks/quantizers.py                 # both shapes, every quantizer, 2 threads
    python benchmarks/quantizers.py --shapes small --quantizers vq fsq
    python benchmarks/quantizers.py --device cuda --seconds 2   # on a GPU: memory is peak CUDA allocation growth

Needs ``pip install vector-quantize-pytorch`` for the comparison column (``--impls vqaudio``: without it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

SHAPES = {"small": (16, 500, 64, 1024), "large": (32, 1000, 128, 8192), "tiny": (2, 50, 16, 64)}  # B, T, D, K
IMPLS = ("vqaudio", "vqp")  # vqp: vector-quantize-pytorch
QUANTIZERS = ("vq", "ema", "cosine", "fsq", "rvq8")
FSQ_LEVELS = {64: [4, 4, 4], 1024: [8, 5, 5, 5], 8192: [8, 8, 8, 4, 4]}


def build(impl: str, kind: str, dim: int, k: int):
    if impl == "vqaudio":
        from vqaudio.quantize import FSQ, EMAVectorQuantizer, ResidualQuantizer, VectorQuantizer

        return {
            "vq": lambda: VectorQuantizer(dim, k),
            "ema": lambda: EMAVectorQuantizer(dim, k),
            "cosine": lambda: VectorQuantizer(dim, k, distance="cosine"),
            "fsq": lambda: FSQ(FSQ_LEVELS[k], dim=dim),
            "rvq8": lambda: ResidualQuantizer.alike(8, lambda: EMAVectorQuantizer(dim, k)),
        }[kind]()
    import vector_quantize_pytorch as vqp

    return {
        "vq": lambda: vqp.VectorQuantize(dim, k, learnable_codebook=True, ema_update=False),
        "ema": lambda: vqp.VectorQuantize(dim, k, decay=0.99),
        "cosine": lambda: vqp.VectorQuantize(dim, k, use_cosine_sim=True),
        "fsq": lambda: vqp.FSQ(FSQ_LEVELS[k], dim=dim),
        "rvq8": lambda: vqp.ResidualVQ(dim=dim, num_quantizers=8, codebook_size=k),
    }[kind]()


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _stepper(impl: str, kind: str, shape: str, mode: str, device: str = "cpu"):
    """Build one implementation's model and input; return a function that runs one step (synchronised on
    CUDA, so its wall time is its GPU time)."""
    import torch

    b, t, d, k = SHAPES[shape]
    model = build(impl, kind, d, k).to(device)
    model.train(mode == "train")
    # vqaudio takes channels-first (B, D, T); vector-quantize-pytorch its native (B, T, D).
    x = torch.randn(b, d, t, device=device) if impl == "vqaudio" else torch.randn(b, t, d, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step():
        if mode == "train":
            x.requires_grad_(True)
            out = model(x)
            if impl == "vqaudio":
                q, loss = out.quantized, out.loss
            else:
                q, loss = out[0], (out[2].sum() if len(out) > 2 and out[2] is not None else 0.0)
            (q.square().mean() + loss).backward()
            x.grad = None
            for p in model.parameters():
                p.grad = None
        else:
            with torch.inference_mode():
                model(x)
        sync()

    return step


def run_speed(kind: str, shape: str, mode: str, threads: int, seconds: float, device: str = "cpu", impls=IMPLS) -> dict:
    """The implementations in one process, steps alternating, so all see the same machine state."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    steps = {impl: _stepper(impl, kind, shape, mode, device) for impl in impls}
    for step in steps.values():
        step()  # warm-up (and k-means/lazy init where there is one)
    times = {impl: [] for impl in steps}
    last = times[impls[-1]]
    start = time.perf_counter()
    while len(last) < 3 or (time.perf_counter() - start < 2 * seconds and len(last) < 50):
        for impl, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[impl].append(time.perf_counter() - t0)
    b, t = SHAPES[shape][:2]
    return {impl: b * t / sorted(ts)[len(ts) // 2] for impl, ts in times.items()}


def run_memory(impl: str, kind: str, shape: str, mode: str, threads: int, device: str = "cpu") -> dict:
    """Peak RSS growth (CUDA: peak allocation growth) over 3 steps after a warm-up step, one implementation
    per process."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    step = _stepper(impl, kind, shape, mode, device)
    step()
    if device.startswith("cuda"):
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(3):
            step()
        return {"peak_mib": max(torch.cuda.max_memory_allocated() - base, 0) / 2**20}
    base = rss_bytes()
    for _ in range(3):
        step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"peak_mib": max(peak - base, 0) / 2**20}


def _subprocess_case(case: list, env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", json.dumps(case)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **env},
    )
    if proc.returncode != 0:
        raise SystemExit(f"case {case} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--shapes", nargs="+", default=["small", "large"], choices=list(SHAPES), help="tiny: smoke runs"
    )
    parser.add_argument("--quantizers", nargs="+", default=list(QUANTIZERS), choices=QUANTIZERS)
    parser.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8.0, help="time budget per case (median of steps)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS, help="implementations to run")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        case = json.loads(args.case)
        print(json.dumps(run_speed(*case[1:]) if case[0] == "speed" else run_memory(*case[1:])))
        return
    memory = "peak CUDA allocation growth" if args.device.startswith("cuda") else "peak RSS growth"
    print(
        f"device={args.device} threads={args.threads}; vectors/s is B*T over the median step; memory is {memory} in MiB"
    )
    header = f"{'shape':6} {'quantizer':9} {'mode':5} | {'vqaudio v/s':>12} {'MiB':>6} | {'vqp v/s':>12} {'MiB':>6}"
    print(header + " | speed-up")
    for shape in args.shapes:
        for kind in args.quantizers:
            for mode in args.modes:
                case = ["speed", kind, shape, mode, args.threads, args.seconds, args.device, args.impls]
                speed = _subprocess_case(case, {})
                res = {impl: {"vectors_per_s": math.nan, "peak_mib": math.nan} for impl in IMPLS}
                for impl in args.impls:
                    memory = _subprocess_case(
                        ["memory", impl, kind, shape, mode, args.threads, args.device],
                        {"MALLOC_MMAP_THRESHOLD_": "65536"},
                    )
                    res[impl] = {"vectors_per_s": speed[impl], "peak_mib": memory["peak_mib"]}
                ours, theirs = res["vqaudio"], res["vqp"]
                print(
                    f"{shape:6} {kind:9} {mode:5} | {ours['vectors_per_s']:12,.0f} {ours['peak_mib']:6.0f} | "
                    f"{theirs['vectors_per_s']:12,.0f} {theirs['peak_mib']:6.0f} | "
                    f"{ours['vectors_per_s'] / theirs['vectors_per_s']:.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
