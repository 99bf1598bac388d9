"""``vqaudio train-kmeans``: k-means unit models over spectral or self-supervised features."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-kmeans",
        help="a k-means unit model over MFCC or log-mel frames (the speech2unit baseline)",
        description="Fit k-means (k-means++ seeds, then Lloyd iterations with chunked distances; memory bounded\n"
        "by --max-frames, a uniform sample of all frames) on standardised MFCC+deltas or log-mel frames of a\n"
        "Kaldi data dir, optionally normalised per utterance (--cmvn) and spliced with their neighbours\n"
        "(--context). The file it writes is a unit model: extract-units, evaluate-units and train-prior take\n"
        "its units as they take a codec's, and a codec's `kmeans` content objective takes it as targets.\n\n"
        "On speech-mini's held-out speakers (K = 256), '--no-deltas --cmvn --context 2' gives PNMI 0.434,\n"
        "the plain MFCC+deltas 0.380 (benchmarks/README.md).\n\n"
        "examples:\n  vqaudio train-kmeans --feature mfcc --k 256 --data data/train --out exp/km/mfcc256.pt\n"
        "  vqaudio train-kmeans --no-deltas --cmvn --context 2 --data data/train --out exp/km/mfcc_ctx2.pt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--feature", default="mfcc", help="mfcc (13 + deltas + delta-deltas) or logmel (default mfcc)")
    p.add_argument("--k", type=int, default=256, help="number of units (default 256)")
    p.add_argument("--data", required=True, help="Kaldi data dir (wav.scp, optional segments)")
    p.add_argument("--out", required=True, help="the unit model file to write, e.g. km.pt")
    p.add_argument("--frame-rate", type=float, default=50.0, help="frames per second (default 50, as the codec)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--n-mels", type=int, default=40, help="mel bands (default 40)")
    p.add_argument(
        "--no-deltas", action="store_true", help="mfcc: the 13 static coefficients without deltas (to splice them)"
    )
    p.add_argument(
        "--cmvn",
        action="store_true",
        help="per-utterance mean and variance normalisation of the features (less speaker in the units)",
    )
    p.add_argument(
        "--context",
        type=int,
        default=0,
        help="frames spliced on each side of each frame, after CMVN (default 0; "
        "'--no-deltas --cmvn --context 2' clusters 5 frames of MFCCs)",
    )
    p.add_argument("--iters", type=int, default=20, help="Lloyd iterations (default 20)")
    p.add_argument("--max-frames", type=int, default=1_000_000, help="frames kept for fitting (default 1M)")
    p.add_argument("--seed", type=int, default=0)
    add_pipe_timeout(p)
    p.set_defaults(func=run_train_kmeans)


def run_train_kmeans(args: argparse.Namespace) -> int:
    import json

    from ..units.kmeans import KMeansConfig, train_kmeans

    config = KMeansConfig(
        feature=args.feature,
        k=args.k,
        sample_rate=args.sample_rate,
        frame_rate=args.frame_rate,
        n_mels=args.n_mels,
        deltas=not args.no_deltas,
        cmvn=args.cmvn,
        context=args.context,
    )
    _, summary = train_kmeans(args.data, args.out, config, iters=args.iters, max_frames=args.max_frames, seed=args.seed)
    print(json.dumps({"model": args.out, **summary}, indent=2))
    return 0
