"""``vqaudio train-ssl``."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout, add_training_options, trainer_overrides

HELP = """Train a HuBERT from scratch (masked prediction of a unit model's units, Hsu et al. 2021), so that a corpus
without a pretrained SSL model (a new language, private data) gets a teacher for units and for a codec's level 0.

Iteration 1 predicts spectral k-means units (train-kmeans on MFCCs); iteration 2 predicts k-means units of a
layer of the iteration-1 model (train-kmeans --feature ssl --ssl-model EXP_IT1 --layer N). The model is
transformers' HubertModel, built from the config's model section (small by default, for CPUs; HuBERT-base is
hidden_size 768, 12 layers, 12 heads, intermediate_size 3072, conv_dim 512).

EXP_DIR receives config.yaml, ssl_targets.json (the unit model's path and sha256; --resume refuses another),
log/train.log, TensorBoard events under tb/ (loss and masked-frame accuracy), checkpoints/{last,best}.ckpt, and
at the end the best checkpoint's model as a transformers folder (config.json, model.safetensors,
preprocessor_config.json): --ssl-model EXP_DIR loads it as it loads a downloaded HuBERT.

examples:
  vqaudio train-kmeans --no-deltas --cmvn --context 2 --data data/train --out exp/km/mfcc_ctx2.pt
  vqaudio train-ssl --config conf/ssl_tiny.yaml --targets exp/km/mfcc_ctx2.pt --train-data data/train \\
      --valid-data data/dev --exp-dir exp/ssl_it1
  vqaudio train-kmeans --feature ssl --ssl-model exp/ssl_it1 --layer 3 --data data/train --out exp/km/it1_l3
  vqaudio train-ssl --config conf/ssl_tiny.yaml --targets exp/km/it1_l3 --train-data data/train \\
      --valid-data data/dev --exp-dir exp/ssl_it2
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-ssl",
        help="train a HuBERT from scratch on masked prediction of units (Lightning; DDP)",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (see recipes/librispeech/conf/ssl_tiny.yaml); defaults when omitted")
    p.add_argument("--targets", help="the unit model whose units are predicted (overrides data.targets)")
    p.add_argument("--train-data", required=True, help="Kaldi data dir (wav.scp) or lhotse cuts .jsonl.gz for training")
    p.add_argument("--valid-data", required=True, help="Kaldi data dir or lhotse cuts .jsonl.gz for validation")
    p.add_argument("--exp-dir", required=True, help="experiment dir (created); the model folder at the end")
    add_training_options(p)
    add_pipe_timeout(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..train.run_ssl import train_ssl
    from ..units.ssl import require_transformers

    require_transformers()  # one line when the [ssl] extra is missing
    exp = train_ssl(
        args.config,
        args.train_data,
        args.valid_data,
        args.exp_dir,
        targets=args.targets,
        resume=args.resume,
        overrides=trainer_overrides(args),
        allow_config_change=args.allow_config_change,
    )
    print(f"SSL model written to {exp} (a transformers model folder: --ssl-model {exp})")
    return 0
