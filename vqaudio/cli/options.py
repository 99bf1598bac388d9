"""Options shared by several commands, and their checks."""

from __future__ import annotations

import argparse

from ..errors import UserError

PIPE_HELP = (
    "seconds a 'cmd |' entry of wav.scp may run before its utterance fails (default 300). Such entries run "
    "/bin/sh with the entry's text: a data dir is code, so only use data dirs you trust"
)


def add_pipe_timeout(p: argparse.ArgumentParser) -> None:
    """``--pipe-timeout`` for a command that reads audio through a data dir's ``wav.scp``."""
    p.add_argument("--pipe-timeout", type=float, default=300.0, metavar="SECONDS", help=PIPE_HELP)


def apply_pipe_timeout(args: argparse.Namespace) -> None:
    """Set the timeout of ``cmd |`` entries when the command has the option."""
    if getattr(args, "pipe_timeout", None) is not None:
        from ..data.audio import set_pipe_timeout

        set_pipe_timeout(args.pipe_timeout)


def check_device(device: str) -> None:
    """One line for a device that is not there, instead of an error deep in model loading."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device: {device!r} is not a device (cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"--device {device}: CUDA device not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--device {device}: not supported; use cpu or cuda")
