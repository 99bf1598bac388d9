"""Logging to an experiment's log file alongside the console."""

from __future__ import annotations

import logging
import pathlib


def add_file_log(path: str | pathlib.Path, level: int = logging.INFO) -> None:
    """Append vqaudio's and Lightning's log records to ``path`` (once per path)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    if any(
        isinstance(h, logging.FileHandler) and pathlib.Path(h.baseFilename) == path.resolve() for h in root.handlers
    ):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(min(root.level, level) if root.level else level)
    for name in ("vqaudio", "pytorch_lightning", "lightning"):
        logging.getLogger(name).setLevel(level)
