"""``vqaudio`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys

from vqaudio import __version__
from vqaudio.errors import UserError

from . import data, kmeans, prior, ssl, train_codec, units, vocoder
from .options import apply_pipe_timeout


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqaudio",
        description="Speech to discrete units and back. Run `vqaudio COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"vqaudio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (train_codec, units, kmeans, ssl, prior, data, vocoder):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        apply_pipe_timeout(args)
        return int(args.func(args) or 0)
    except UserError as err:  # bad input: one clear line, no traceback; anything else is a bug and keeps it
        print(f"vqaudio {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
