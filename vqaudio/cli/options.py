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


def add_training_options(p: argparse.ArgumentParser, updates: str = "trainer.max_steps") -> None:
    """``--resume``, ``--allow-config-change`` and the trainer overrides of a Lightning training command."""
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR/checkpoints/last.ckpt")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue with --config where it differs from EXP_DIR/config.yaml (refused otherwise)",
    )
    p.add_argument("--max-steps", type=int, help=f"override {updates}")
    p.add_argument("--devices", help="override trainer.devices (e.g. 1, 4, auto)")
    p.add_argument("--num-nodes", type=int, help="override trainer.num_nodes")
    p.add_argument("--accelerator", help="override trainer.accelerator (cpu, gpu, auto)")
    p.add_argument("--precision", help="override trainer.precision (32-true, bf16-mixed, 16-mixed)")


def trainer_overrides(args: argparse.Namespace) -> dict:
    """The trainer fields :func:`add_training_options` set on the command line."""
    given = {
        "max_steps": args.max_steps,
        "devices": args.devices,
        "num_nodes": args.num_nodes,
        "accelerator": args.accelerator,
        "precision": args.precision,
    }
    return {k: v for k, v in given.items() if v is not None}
