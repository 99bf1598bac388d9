"""Train each vqaudio quantizer on log-mel frames of real speech and print what it learned.

    python egs/quantize_speech.py [--corpus ../shared/data/speech-mini] [--steps 300] [--codes 64]

Frames (80 log-mel bins, 10 ms hop) come from every FLAC file with a forced phone alignment; each
quantizer is trained to reconstruct the standardised frames, then its units are compared with the
phones: usage, perplexity, reconstruction error, phone purity and PNMI (higher = units closer to phones).
Without the corpus, the demo stops with a message saying where to get it.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import time

import librosa
import numpy as np
import soundfile as sf
import torch

from vqaudio.metrics import unit_phone_stats
from vqaudio.quantize import FSQ, EMAVectorQuantizer, ResidualQuantizer, VectorQuantizer

SR, HOP, WIN, MELS = 16000, 160, 400, 80
DEFAULT_CORPUS = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "speech-mini"


def log_mel(wav: np.ndarray) -> torch.Tensor:
    """(T,) float waveform -> (frames, 80) log-mel, 25 ms windows, 10 ms hop."""
    spec = (
        torch.stft(
            torch.from_numpy(wav).float(), WIN, HOP, window=torch.hann_window(WIN), return_complex=True, center=True
        )
        .abs()
        .pow(2)
    )
    mel = torch.from_numpy(librosa.filters.mel(sr=SR, n_fft=WIN, n_mels=MELS)).float() @ spec
    return torch.log(mel + 1e-6).t()


def load(corpus: pathlib.Path, max_utts: int) -> tuple[torch.Tensor, np.ndarray]:
    ctm = corpus / "alignments" / "pocketsphinx" / "speech-mini.phones.ctm"
    if not ctm.is_file():
        raise SystemExit(f"no alignments at {ctm}: pass --corpus pointing at the speech-mini folder")
    segments = collections.defaultdict(list)
    for line in ctm.read_text().splitlines():
        utt, _, start, dur, phone = line.split()
        segments[utt].append((float(start), float(dur), phone))
    paths = {p.stem: p for p in corpus.rglob("*.flac")}
    feats, labels = [], []
    for utt in sorted(segments)[:max_utts]:
        if utt not in paths:
            continue
        wav, sr = sf.read(paths[utt], dtype="float32")
        if sr != SR:
            wav = librosa.resample(wav, orig_sr=sr, target_sr=SR, res_type="soxr_hq")
        f = log_mel(wav)
        lab = np.full(f.shape[0], "SIL", dtype=object)
        for start, dur, phone in segments[utt]:
            lab[int(round(start * 100)) : int(round((start + dur) * 100))] = phone
        feats.append(f)
        labels.append(lab[: f.shape[0]])
    return torch.cat(feats), np.concatenate(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=pathlib.Path, default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--codes", type=int, default=64, help="codebook size of the VQ kinds")
    parser.add_argument("--max-utts", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    feats, phones = load(args.corpus, args.max_utts)
    feats = (feats - feats.mean(0)) / feats.std(0)
    print(
        f"{feats.shape[0]} frames ({feats.shape[0] / 100 / 60:.1f} min) from {args.corpus}, "
        f"{len(set(phones))} phone labels, loaded in {time.time() - t0:.1f}s"
    )
    k = args.codes
    quantizers = {
        f"VQ K={k} (k-means init)": VectorQuantizer(MELS, k, kmeans_init=True, dead_code_threshold=1.0),
        f"VQ K={k} cosine": VectorQuantizer(MELS, k, distance="cosine", kmeans_init=True, dead_code_threshold=1.0),
        f"EMA-VQ K={k}": EMAVectorQuantizer(MELS, k, kmeans_init=True, dead_code_threshold=1.0),
        "FSQ [4,4,4] (64 codes)": FSQ([4, 4, 4], dim=MELS),
        f"RVQ 4 x EMA K={k}": ResidualQuantizer.alike(
            4, lambda: EMAVectorQuantizer(MELS, k, kmeans_init=True, dead_code_threshold=1.0)
        ),
    }
    x_all = feats.t()[None]  # (1, 80, N)
    print(f"{'quantizer':26} {'bits':>5} {'usage':>6} {'perpl':>6} {'rel.err':>7} {'purity':>6} {'PNMI':>5}")
    for name, q in quantizers.items():
        params = list(q.parameters())
        opt = torch.optim.Adam(params, lr=3e-3) if params else None
        for _ in range(args.steps):
            batch = feats[torch.randint(0, feats.shape[0], (2048,))].t()[None]
            out = q(batch)
            if opt is not None:
                opt.zero_grad()
                ((out.quantized - batch).pow(2).mean() + out.loss).backward()
                opt.step()
        q.eval()
        with torch.no_grad():
            out = q(x_all)
        err = float((out.quantized - x_all).pow(2).mean() / x_all.pow(2).mean())
        first = out.indices[0] if out.indices.ndim == 2 else out.indices[0, 0]
        stats = unit_phone_stats(first.numpy(), phones)
        usage = out.metrics["usage_q0" if q.n_q > 1 else "usage"]
        perplexity = out.metrics["perplexity_q0" if q.n_q > 1 else "perplexity"]
        print(
            f"{name:26} {q.bits_per_frame:5.1f} {float(usage):6.2f} {float(perplexity):6.1f} {err:7.3f} "
            f"{stats['phone_purity']:6.3f} {stats['pnmi']:5.3f}"
        )
    print(f"done in {time.time() - t0:.1f}s (purity/PNMI of the first level against pocketsphinx phone alignments)")


if __name__ == "__main__":
    main()
