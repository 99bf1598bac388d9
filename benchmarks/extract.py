"""Unit extraction throughput on real speech, where its time goes, and how much of the core the encoder uses.

    python benchmarks/extract.py                                   # this checkout, speech-mini, ~5 min
    git worktree add /tmp/before <commit>                          # the code to compare with
    python benchmarks/extract.py --compare /tmp/before             # both, in one run, the same model and audio
    python benchmarks/extract.py --model exp/codec/model.pt        # a trained codec instead of random weights
    python benchmarks/extract.py --repeat 4                        # every file 4 times: 3 h, fixed costs diluted

Builds a Kaldi data dir over every FLAC file of the corpus (all of speech-mini: 308 utterances, 45 min) and
saves the default codec (random weights, seed 0: speed does not depend on them), then, for this checkout and
each ``--compare`` checkout (run as a subprocess with that code first on ``PYTHONPATH``), one after the other:

- ``matmul``: one thread's GMAC/s in a 1024 x 1024 float32 ``torch.mm``, the yardstick of the same run;
- ``bare``: the encoder on audio already in memory, one thread: the whole corpus through
  ``Codec.encode_batch`` in batches of ``--batch-seconds`` as extraction cuts them (``encode_chunked`` one
  utterance at a time where the code has no ``encode_batch``), and its parts: the convolutions
  (``encoder.infer`` per utterance), the latent LSTM (as ``encode_batch`` batches it, or per utterance) and
  the quantizer; its real-time factor and GMAC/s (MACs per audio second counted over the layers);
- ``read``: reading every file (soundfile) and resampling the ones at another rate (soxr), one thread;
- ``1 job``: ``vqaudio extract-units --threads 1`` over the corpus alone: wall time, its ratio to ``bare``,
  the job's own read / encode / write split (where the code reports it) and its peak resident memory;
- ``2 jobs``: two such jobs at once (``--nj 2``), wall time from start to the merged output: hours of audio
  per hour, the figure the target scales by ``matmul`` / 41.5 GMAC/s;
- ``encodec``: EnCodec-24k's encoder on 10 s, one thread, best of 3 (``pip install --no-deps encodec einops``;
  skipped without it), for the encode-speed ratio of the same run.

Units of every checkout are compared with this one's (share of frames identical at every level). Results go
to ``--out`` (``results.json``) and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "speech-mini"
TARGET = 100.0  # hours of audio per hour for two 1-thread jobs on the 2-core machine, at 41.5 GMAC/s per thread
YARDSTICK = 41.5  # GMAC/s of one thread's 1024 x 1024 matmul when the target was set


def gmacs_matmul(repeats: int = 20) -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - t) / repeats)
    return 1024**3 / best / 1e9


def best_of(fn, x, repeats: int = 3) -> float:
    """Seconds of ``fn(x)``, the best of ``repeats`` after a warm-up call."""
    fn(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(x)
        best = min(best, time.perf_counter() - t)
    return best


def encoder_macs_per_second(codec) -> float:
    """MACs per audio second of the encoder (convolutions, Linear layers, a mel encoder's filterbank; not its
    FFT), its LSTM and output map, and the quantizer's search."""
    import torch
    from torch import nn

    macs = 0

    def conv(module, inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_channels // module.groups * module.kernel_size[0]

    def linear(module, inputs, output):
        nonlocal macs
        macs += output.numel() * module.in_features

    hooks = [m.register_forward_hook(conv) for m in codec.encoder.modules() if isinstance(m, nn.Conv1d)]
    hooks += [m.register_forward_hook(linear) for m in codec.encoder.modules() if isinstance(m, nn.Linear)]
    filters = getattr(codec.encoder.net[0], "filters", None)  # a mel encoder's (bins, n_mels) filterbank
    if filters is not None:
        macs += codec.frame_rate * filters.numel()
    lstm = getattr(codec, "encoder_lstm", None)
    if lstm is not None:
        hooks += [m.register_forward_hook(linear) for m in lstm.modules() if isinstance(m, nn.Linear)]
    wav = torch.zeros(1, 1, codec.sample_rate)
    with torch.no_grad():
        codec.encoder(wav)
    for h in hooks:
        h.remove()
    frames = codec.frame_rate
    if lstm is not None:
        for layer in range(lstm.lstm.num_layers):
            inp = getattr(lstm.lstm, f"weight_ih_l{layer}").shape[1]
            macs += frames * 4 * lstm.lstm.hidden_size * (inp + lstm.lstm.hidden_size)
    macs += frames * codec.n_q * codec.codebook_size * codec.config.latent_dim  # nearest-code search, every level
    return float(macs)


def worker(spec: dict) -> dict:
    """The measurements of one checkout (runs in a subprocess with that code first on the path)."""
    import soundfile as sf
    import torch

    import vqaudio
    from vqaudio import Codec
    from vqaudio.data.audio import load_audio

    torch.set_num_threads(1)
    out: dict = {"code": str(pathlib.Path(vqaudio.__file__).resolve().parents[1])}
    out["matmul_gmacs"] = gmacs_matmul()
    codec = Codec.from_pretrained(spec["model"]).eval()
    files = [pathlib.Path(line.split(maxsplit=1)[1]) for line in pathlib.Path(spec["wav_scp"]).read_text().splitlines()]

    t = time.perf_counter()
    raw = [sf.read(str(f), dtype="float32") for f in files]
    out["read_s"] = time.perf_counter() - t
    t = time.perf_counter()
    wavs = [torch.from_numpy(load_audio(str(f), codec.sample_rate)) for f in files]
    out["resample_s"] = max(0.0, time.perf_counter() - t - out["read_s"])
    out["resampled_files"] = sum(sr != codec.sample_rate for _, sr in raw)
    del raw
    audio = sum(w.shape[0] for w in wavs) / codec.sample_rate
    out["audio_s"] = audio

    # batches as extraction cuts them: in order, a new one once batch_seconds of audio waits
    batches, current, waiting = [], [], 0
    for w in wavs:
        current.append(w)
        waiting += w.shape[0]
        if waiting >= spec["batch_seconds"] * codec.sample_rate:
            batches.append(current)
            current, waiting = [], 0
    if current:
        batches.append(current)
    batched = hasattr(codec, "encode_batch")
    device = torch.device(spec.get("device", "cpu"))
    codec.to(device)

    def on_device(batch: list) -> list:
        if device.type == "cpu":
            return batch
        return [w.pin_memory().to(device, non_blocking=True) for w in batch]

    codec.encode_chunked(on_device(wavs[:1])[0][None, None])  # warm-up: window primitives, CUDA kernels
    t = time.perf_counter()
    if batched:
        units = [c.cpu() for b in batches for c in codec.encode_batch(on_device(b))]
    else:
        units = [codec.encode_chunked(w[None, None])[0].cpu() for w in on_device(wavs)]
    out["bare_s"] = time.perf_counter() - t
    torch.save({f.stem: u for f, u in zip(files, units, strict=True)}, spec["units"])
    out["macs_per_audio_s"] = encoder_macs_per_second(codec.cpu())
    out["encoder_gmacs"] = out["macs_per_audio_s"] * audio / out["bare_s"] / 1e9
    out["bare_rtf"] = audio / out["bare_s"]
    if device.type != "cpu":
        return out

    t = time.perf_counter()
    latents = [codec.encoder.infer(codec._pad(w[None, None])) for w in wavs]
    out["conv_s"] = time.perf_counter() - t
    lstm = getattr(codec, "encoder_lstm", None)
    t = time.perf_counter()
    if lstm is not None:
        if batched:  # as encode_batch runs it, batch by batch
            i = 0
            for b in batches:
                with torch.no_grad():
                    lstm.forward_batch([x[0] for x in latents[i : i + len(b)]])
                i += len(b)
        else:
            with torch.no_grad():
                for x in latents:
                    lstm(x)
    out["lstm_s"] = time.perf_counter() - t
    t = time.perf_counter()
    for x in latents:
        codec._codes(x, codec.n_q)
    out["quantizer_s"] = time.perf_counter() - t

    if spec.get("encodec"):
        import types

        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
        try:
            import encodec
        except ImportError:
            out["encodec_rtf"] = None
        else:
            model = encodec.EncodecModel.encodec_model_24khz(pretrained=False).eval()
            with torch.no_grad():
                out["encodec_rtf"] = 10.0 / best_of(model.encode, torch.randn(1, 1, 24000 * 10) * 0.1)
            out["encode10_rtf"] = 10.0 / best_of(codec.encode, torch.randn(1, 1, codec.sample_rate * 10) * 0.1)
    return out


def run_jobs(
    code: pathlib.Path, model: pathlib.Path, data: pathlib.Path, out: pathlib.Path, nj: int, batch: float, device: str
):
    """``nj`` one-thread extract-units jobs of ``code`` at once: (wall s, [peak RSS MiB], [stdout])."""
    cmd = [sys.executable, "-m", "vqaudio.cli.main", "extract-units", "--model", str(model), "--data", str(data)]
    cmd += ["--out", str(out), "--nj", str(nj), "--threads", "1", "--device", device]
    if batch:
        cmd += ["--batch-seconds", str(batch)]
    env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
    t = time.time()
    procs = [
        # cwd: ``python -m`` puts it first on the path, before PYTHONPATH
        subprocess.Popen(
            cmd + ["--job", str(j)], env=env, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        for j in range(1, nj + 1)
    ]
    rss, texts = [], []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        texts.append(p.stdout.read())
        rss.append(usage.ru_maxrss / 1024)
        if p.returncode:
            raise SystemExit(f"extract-units of {code} failed (exit {p.returncode}): {texts[-1][-500:]}")
    return time.time() - t, rss, texts


def stages_of(text: str) -> str:
    """The job's own split from its ``throughput:`` line, or ``-`` where that code prints none."""
    line = next((x for x in text.splitlines() if x.startswith("throughput:")), "")
    return line[line.index("(") + 1 : line.rindex(")")] if "(" in line else "-"


def agreement(a: dict, b: dict) -> float:

    same = sum(int((a[k] == b[k]).all(0).sum()) for k in a)
    return same / sum(a[k].shape[-1] for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=DEFAULT)
    parser.add_argument("--model", type=pathlib.Path, help="a codec model.pt (default: the default codec, random)")
    parser.add_argument("--compare", type=pathlib.Path, nargs="*", default=[], help="other checkouts to measure")
    parser.add_argument("--batch-seconds", type=float, default=200.0, help="audio per batch (as extract-units)")
    parser.add_argument("--limit", type=int, help="only the first N files (a smoke run)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="list every file N times (ids <stem>-r<k>): a longer corpus, where a job's fixed costs weigh less",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cuda: the encoder and the jobs on the GPU (benchmarks/gpu.sh); cpu parts skipped",
    )
    parser.add_argument("--no-jobs", action="store_true", help="skip the extract-units jobs")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/tmp/vqaudio_extract"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    files = sorted(args.corpus.rglob("*.flac"), key=lambda p: p.stem)[: args.limit]
    if not files:
        raise SystemExit(f"no FLAC files under {args.corpus}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        data = tmp / "data"
        data.mkdir()
        if args.repeat < 1:
            raise SystemExit(f"--repeat must be >= 1, got {args.repeat}")
        ids = [(f"{f.stem}-r{k}" if args.repeat > 1 else f.stem, f) for k in range(args.repeat) for f in files]
        (data / "wav.scp").write_text("".join(f"{utt} {f}\n" for utt, f in sorted(ids)))
        model = args.model
        if model is None:
            sys.path.insert(0, str(ROOT))
            import torch

            from vqaudio import Codec

            torch.manual_seed(0)
            model = Codec().save_pretrained(tmp / "model.pt")
        results = []
        for i, code in enumerate([ROOT, *args.compare]):
            code = code.resolve()
            spec = {
                "model": str(model),
                "wav_scp": str(data / "wav.scp"),
                "batch_seconds": args.batch_seconds,
                "units": str(tmp / f"units{i}.pt"),
                "encodec": args.device == "cpu",
                "device": args.device,
            }
            env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True, text=True
            )
            if proc.returncode:
                raise SystemExit(f"worker for {code} failed:\n{proc.stderr[-2000:]}")
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["label"] = "this checkout" if i == 0 else str(code)
            if not args.no_jobs:
                batch = args.batch_seconds if i == 0 else 0.0  # the other code's own default
                one, rss, texts = run_jobs(code, model, data, tmp / f"one{i}", 1, batch, args.device)
                res.update(one_job_s=one, one_job_rss_mib=rss[0], one_job_stages=stages_of(texts[0]))
                res["one_job_h_per_h"] = res["audio_s"] / one
                if args.device == "cpu":  # two one-thread jobs: the 2-core machine's way to use both cores
                    two, rss2, _ = run_jobs(code, model, data, tmp / f"two{i}", 2, batch, args.device)
                    res.update(two_jobs_s=two, two_jobs_rss_mib=max(rss2))
                    res["two_jobs_h_per_h"] = res["audio_s"] / two
                res["one_job_of_bare"] = res["bare_s"] / one
                res["target_h_per_h"] = TARGET * res["matmul_gmacs"] / YARDSTICK
            results.append(res)
        import torch

        first = torch.load(tmp / "units0.pt")
        for i, res in enumerate(results[1:], 1):
            res["units_identical_to_this_checkout"] = agreement(first, torch.load(tmp / f"units{i}.pt"))
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, args))


def table(results: list[dict], args) -> str:
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    rows = [
        ("audio (min)", lambda r: f(r.get("audio_s") / 60, ".1f")),
        ("matmul, one thread (GMAC/s)", lambda r: f(r.get("matmul_gmacs"), ".1f")),
        ("encoder MACs per audio second (G)", lambda r: f(r.get("macs_per_audio_s") / 1e9, ".3f")),
        ("bare encode, one thread (x real time)", lambda r: f(r.get("bare_rtf"), ".1f")),
        (
            "  its GMAC/s (share of the matmul's)",
            lambda r: f"{r['encoder_gmacs']:.1f} ({r['encoder_gmacs'] / r['matmul_gmacs']:.0%})",
        ),
        ("  convolutions (s)", lambda r: f(r.get("conv_s"), ".1f")),
        ("  latent LSTM (s)", lambda r: f(r.get("lstm_s"), ".1f")),
        ("  quantizer (s)", lambda r: f(r.get("quantizer_s"), ".1f")),
        (
            "read / resample, one thread (s)",
            lambda r: f"{r['read_s']:.1f} / {r['resample_s']:.1f} ({r['resampled_files']} files)",
        ),
        ("10 s encode, best of 3 (x real time)", lambda r: f(r.get("encode10_rtf"), ".1f")),
        ("EnCodec-24k encode, same (x real time)", lambda r: f(r.get("encodec_rtf"), ".1f")),
        ("  ratio", lambda r: f(r.get("encode10_rtf") / r["encodec_rtf"], ".2f") if r.get("encodec_rtf") else "-"),
    ]
    if not args.no_jobs:
        rows += [
            ("1 job x 1 thread: wall (s)", lambda r: f(r.get("one_job_s"), ".1f")),
            ("  hours of audio per hour", lambda r: f(r.get("one_job_h_per_h"), ".0f")),
            ("  of the bare encoder's speed", lambda r: f(r.get("one_job_of_bare"), ".2f")),
            ("  the job's own split", lambda r: r["one_job_stages"]),
            ("  peak RSS (MiB)", lambda r: f(r.get("one_job_rss_mib"), ".0f")),
            ("2 jobs x 1 thread: wall (s)", lambda r: f(r.get("two_jobs_s"), ".1f")),
            ("  hours of audio per hour", lambda r: f(r.get("two_jobs_h_per_h"), ".0f")),
            ("  target at this matmul rate", lambda r: f(r.get("target_h_per_h"), ".0f")),
        ]
    rows.append(
        (
            "units identical to this checkout's (frames)",
            lambda r: (
                f(r.get("units_identical_to_this_checkout"), ".4%") if "units_identical_to_this_checkout" in r else "-"
            ),
        )
    )
    head = "| | " + " | ".join(r["label"] for r in results) + " |"
    lines = [head, "|---|" + "---:|" * len(results)]
    lines += ["| " + name + " | " + " | ".join(fn(r) for r in results) + " |" for name, fn in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
