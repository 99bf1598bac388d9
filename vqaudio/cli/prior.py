"""``vqaudio train-prior`` and ``vqaudio sample``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-prior",
        help="train the WaveNet prior on unit dirs",
        description="Train a WaveNet prior over units written by `vqaudio extract-units` (Lightning). The "
        "experiment dir gets config.yaml, log/train.log, TensorBoard events (train/val NLL in bits per "
        "unit, perplexity), checkpoints/{last,best}.ckpt and prior.pt (best val/nll_bits).",
    )
    p.add_argument("--config", help="YAML config (recipes/librispeech/conf/prior_*.yaml); defaults when omitted")
    p.add_argument("--train-units", required=True, help="units dir (with units.json) for training")
    p.add_argument("--valid-units", required=True, help="units dir for validation")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR/checkpoints/last.ckpt")
    p.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    p.set_defaults(func=run_train_prior)

    p = sub.add_parser(
        "sample",
        help="sample new speech from a prior through a codec",
        description="Generate units with the prior, decode them with the codec: OUT/sample_<i>.wav, their units "
        "and summary.json (unit entropy, codebook usage, repetition rate, longest run: silence loops "
        "show as a high repetition rate).",
    )
    p.add_argument("--prior", required=True, help="prior.pt or the train-prior experiment dir")
    p.add_argument("--codec", required=True, help="model.pt of the codec the units came from")
    p.add_argument("--num", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=run_sample)


def run_train_prior(args: argparse.Namespace) -> int:
    from ..train.run_prior import train_prior

    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else {}
    path = train_prior(args.config, args.train_units, args.valid_units, args.exp_dir, args.resume, overrides)
    print(f"prior written to {path}")
    return 0


def run_sample(args: argparse.Namespace) -> int:
    import json

    from ..models.codec import Codec
    from ..train.run_prior import load_prior
    from ..units.sample import sample_speech

    summary = sample_speech(
        load_prior(args.prior),
        Codec.from_pretrained(args.codec),
        args.out,
        args.num,
        args.seconds,
        args.temperature,
        args.top_k,
        args.seed,
    )
    print(json.dumps(summary, indent=2))
    return 0
