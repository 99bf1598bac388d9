"""Atomic file writes: a reader sees the old file or the whole new one, never a part, even after a crash."""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Iterator

from .errors import UserError


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


def path_inside(out_dir: str | pathlib.Path, name: str, suffix: str = "") -> pathlib.Path:
    """``out_dir/<name><suffix>``, refusing any ``name`` (an utterance id from data) that would land
    elsewhere: a separator, a leading dot, an absolute path or a control character."""
    from .data.kaldi import id_problem

    problem = id_problem(name)
    if problem:
        raise UserError(f"utterance id {name!r} cannot name a file in {out_dir}: {problem}")
    path = pathlib.Path(out_dir) / f"{name}{suffix}"
    if path.resolve().parent != pathlib.Path(out_dir).resolve():
        raise UserError(f"utterance id {name!r} would write outside {out_dir}")
    return path
