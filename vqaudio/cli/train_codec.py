"""``vqaudio train-codec``."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout, add_training_options, trainer_overrides

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
    p.add_argument("--train-data", required=True, help="Kaldi data dir (wav.scp) or lhotse cuts .jsonl.gz for training")
    p.add_argument("--valid-data", required=True, help="Kaldi data dir or lhotse cuts .jsonl.gz for validation")
    p.add_argument("--exp-dir", required=True, help="experiment dir (created)")
    add_training_options(p, "trainer.max_steps (codec updates)")
    add_pipe_timeout(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.run_codec import train_codec

    model = train_codec(
        args.config,
        args.train_data,
        args.valid_data,
        args.exp_dir,
        resume=args.resume,
        overrides=trainer_overrides(args),
        allow_config_change=args.allow_config_change,
    )
    print(f"codec written to {model}")
    return 0
