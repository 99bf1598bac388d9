"""``vqaudio data-dir``: validate, fix and split Kaldi data dirs (what the recipes' utils/ scripts call)."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data-dir",
        help="validate, fix or split a Kaldi data dir",
        description="validate: Kaldi's rules (C-locale sorted unique keys, utt2spk/spk2utt "
        "inverse, consistent ids, trailing newlines); errors name the file and line. "
        "fix: sort, drop utterances missing from any table, rebuild spk2utt. "
        "split: DIR/split<N>/<1..N>/ by speaker.",
    )
    p.add_argument("action", choices=["validate", "fix", "split", "utt2dur"])
    p.add_argument("dir")
    p.add_argument("--nj", type=int, default=1, help="shards for split")
    add_pipe_timeout(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.kaldi import fix_data_dir, split_data_dir, validate_data_dir, write_utt2dur

    if args.action == "validate":
        print(f"{args.dir}: valid, {validate_data_dir(args.dir)} utterances")
    elif args.action == "fix":
        print(f"{args.dir}: {fix_data_dir(args.dir)} utterances kept")
    elif args.action == "utt2dur":
        print(f"{args.dir}: utt2dur for {write_utt2dur(args.dir)} utterances")
    else:
        print("\n".join(str(p) for p in split_data_dir(args.dir, args.nj)))
    return 0
