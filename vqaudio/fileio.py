"""Atomic file writes: a reader sees the old file or the whole new one, never a part, even after a crash."""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_output(path: str | pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path`` to write; on success it is fsync'ed and renamed over ``path``
    (and the directory fsync'ed, so the rename survives a power cut); on error it is removed.

    Example::

        with atomic_output("exp/model.pt") as tmp:
            torch.save(payload, tmp)
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # some filesystems refuse to open directories
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | pathlib.Path, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return pathlib.Path(path)
