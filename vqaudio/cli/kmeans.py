"""``vqaudio train-kmeans``: k-means unit models over spectral or self-supervised features."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-kmeans",
        help="a k-means unit model over MFCC, log-mel or SSL (HuBERT, WavLM, wav2vec 2.0) frames",
        description="Fit k-means (k-means++ seeds, then Lloyd iterations with chunked distances; memory bounded\n"
        "by --max-frames, a uniform sample of all frames) on standardised MFCC+deltas or log-mel frames of a\n"
        "Kaldi data dir, optionally normalised per utterance (--cmvn) and spliced with their neighbours\n"
        "(--context), or on the raw output of one transformer layer of a self-supervised model (--feature ssl:\n"
        "fairseq's simple_kmeans / ESPnet asr2 units; needs pip install 'vqaudio[ssl]'). The file it writes is a\n"
        "unit model: extract-units, evaluate-units and train-prior take its units as they take a codec's, and a\n"
        "codec's `kmeans` content objective takes it as targets. An SSL unit model records the SSL model's path\n"
        "or Hub id, revision and weights sha256 (not its weights) and writes its centroids as .npy beside it\n"
        "(fairseq/ESPnet k-means appliers read them as they are).\n\n"
        "--layer L is the output of transformer layer L (fairseq's output_layer=L, transformers'\n"
        "hidden_states[L]); in HuBERT-base the middle layers carry the most phones (textlesslib's units\n"
        "cluster layer 6, SpeechTokenizer distils layer 9).\n\n"
        "On speech-mini's held-out speakers (K = 256), '--no-deltas --cmvn --context 2' gives PNMI 0.434,\n"
        "the plain MFCC+deltas 0.380 (benchmarks/README.md).\n\n"
        "examples:\n  vqaudio train-kmeans --feature mfcc --k 256 --data data/train --out exp/km/mfcc256.pt\n"
        "  vqaudio train-kmeans --no-deltas --cmvn --context 2 --data data/train --out exp/km/mfcc_ctx2.pt\n"
        "  vqaudio train-kmeans --feature ssl --ssl-model facebook/hubert-base-ls960 --layer 6 --k 500 \\\n"
        "      --data data/train --out exp/km/hubert_l6_500 --device cuda",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--feature", default="mfcc", help="mfcc (13 + deltas + delta-deltas), logmel or ssl (default mfcc)")
    p.add_argument("--ssl-model", help="ssl: a transformers model folder (e.g. train-ssl's) or a Hub id")
    p.add_argument("--layer", type=int, default=6, help="ssl: transformer layer whose output is clustered (default 6)")
    p.add_argument("--ssl-revision", help="ssl: Hub revision (branch, tag or commit) of a Hub id")
    p.add_argument("--device", default="cpu", help="ssl: device for the SSL model (cpu or cuda; bf16 on cuda)")
    p.add_argument("-f", "--force", action="store_true", help="replace an existing model at --out")
    p.add_argument("--k", type=int, default=256, help="number of units (default 256)")
    p.add_argument("--data", required=True, help="Kaldi data dir (wav.scp, optional segments) or lhotse cuts .jsonl.gz")
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
    from .options import check_device

    check_device(args.device)

    config = KMeansConfig(
        feature=args.feature,
        k=args.k,
        sample_rate=args.sample_rate,
        frame_rate=args.frame_rate,
        n_mels=args.n_mels,
        deltas=not args.no_deltas,
        cmvn=args.cmvn,
        context=args.context,
        standardize=args.feature != "ssl",
        ssl_model=args.ssl_model or "",
        ssl_layer=args.layer,
        ssl_revision=args.ssl_revision,
    )
    _, summary = train_kmeans(
        args.data,
        args.out,
        config,
        iters=args.iters,
        max_frames=args.max_frames,
        seed=args.seed,
        device=args.device,
        force=args.force,
    )
    print(json.dumps({"model": args.out, **summary}, indent=2))
    return 0
