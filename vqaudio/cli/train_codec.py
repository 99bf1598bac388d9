"""``vqaudio train-codec``."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout

HELP = """Train a waveform codec on Kaldi data dirs with Lightning.

The experiment dir receives config.yaml (the full config, defaults filled in), log/train.log,
TensorBoard events under tb/ (every loss, codebook perplexity/usage, audio examples, spectrograms),
checkpoints/{last,best}.ckpt, and at the end model.pt (best validation mel distance) and
model_last.pt, the self-describing files `vqaudio extract-units` and `Codec.from_pretrained` read.

Multi-GPU / multi-node: set trainer.devices / trainer.num_nodes in the config (or --devices,
--num-nodes); under SLURM launch with srun and Lightning picks up the environment.

examples:
  vqaudio train-codec --config conf/codec_tiny.yaml --train-data data/train_clean_5 \\
      --valid-data data/dev_clean_2 --exp-dir exp/codec_tiny
  vqaudio train-codec --exp-dir exp/codec_tiny --train-data data/train_clean_5 \\
      --valid-data data/dev_clean_2 --resume          # continue after a kill
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-codec",
        help="train a codec (Lightning; GAN; DDP)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (see recipes/librispeech/conf/); defaults when omitted")
    p.add_argument("--train-data", required=True, help="Kaldi data dir with wav.scp for training")
    p.add_argument("--valid-data", required=True, help="Kaldi data dir for validation")
    p.add_argument("--exp-dir", required=True, help="experiment dir (created)")
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR/checkpoints/last.ckpt")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue with --config where it differs from EXP_DIR/config.yaml (refused otherwise)",
    )
    p.add_argument("--max-steps", type=int, help="override trainer.max_steps (codec updates)")
    p.add_argument("--devices", help="override trainer.devices (e.g. 1, 4, auto)")
    p.add_argument("--num-nodes", type=int, help="override trainer.num_nodes")
    p.add_argument("--accelerator", help="override trainer.accelerator (cpu, gpu, auto)")
    p.add_argument("--precision", help="override trainer.precision (32-true, bf16-mixed, 16-mixed)")
    add_pipe_timeout(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.run_codec import train_codec

    overrides = {
        k: v
        for k, v in {
            "max_steps": args.max_steps,
            "devices": args.devices,
            "num_nodes": args.num_nodes,
            "accelerator": args.accelerator,
            "precision": args.precision,
        }.items()
        if v is not None
    }
    model = train_codec(
        args.config,
        args.train_data,
        args.valid_data,
        args.exp_dir,
        resume=args.resume,
        overrides=overrides,
        allow_config_change=args.allow_config_change,
    )
    print(f"codec written to {model}")
    return 0
