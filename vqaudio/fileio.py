"""Atomic file writes: a reader sees the old file or the whole new one, never a part, even after a crash."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import shutil
import stat
from collections.abc import Iterator

from .errors import UserError


def current_umask() -> int:
    """The process's umask, read without changing it where Linux reports it (``/proc/self/status``, since
    Linux 4.7), else by setting it and setting it back."""
    with contextlib.suppress(OSError, ValueError):
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(path: pathlib.Path) -> int:
    """The mode a new version of ``path`` gets: the old file's when it exists, else ``0o666`` less the umask
    (what ``open`` gives); writers that create private files (safetensors writes 0600) are overruled."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~current_umask()


def make_dirs(path: pathlib.Path, what: str = "output") -> None:
    """``mkdir -p path``, one :class:`UserError` line when it cannot be made (a parent is a file, no
    permission, a read-only or virtual filesystem)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{what} folder {path}: a file of that name (or of a parent's) is in the way") from None
    except OSError as err:
        raise UserError(f"{what} folder {path}: cannot create it ({err.strerror or err})") from None


def file_sha256(*paths: str | pathlib.Path) -> str:
    """sha256 of the bytes of ``paths`` read in turn, hex."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def check_writable(path: pathlib.Path, what: str = "output") -> None:
    """:func:`make_dirs`, then one :class:`UserError` line when no file can be created in ``path`` (a folder
    without write permission, an immutable one, a read-only filesystem)."""
    make_dirs(path, what)
    probe = path / f".write-test{os.getpid()}"
    try:
        probe.open("wb").close()
    except OSError as err:
        raise UserError(f"{what} folder {path}: cannot write there ({err.strerror or err})") from None
    probe.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_files(*paths: str | pathlib.Path) -> Iterator[list[pathlib.Path]]:
    """Yield a temporary path beside each of ``paths`` to write. When the block ends without error, every one is
    fsync'ed and given the mode of the file it replaces (a new file: ``0o666`` less the umask) before the first
    is renamed over its path, then the directories are fsync'ed (the renames survive a power cut); so an error
    while writing or syncing any of them replaces none. On error they are removed. A parent folder that cannot
    be created, or in which no file can be created, is a :class:`UserError`.
    """
    paths = [pathlib.Path(p) for p in paths]
    tmps: list[pathlib.Path] = []
    try:
        for path in paths:
            make_dirs(path.parent)
            if path.is_dir():
                raise UserError(f"{path}: is a folder; name a file to write")
            tmps.append(path.with_name(f".{path.name}.tmp{os.getpid()}"))
            try:
                tmps[-1].open("wb").close()  # the writer replaces it; a folder that takes no file is one line
            except OSError as err:
                tmps.pop()
                raise UserError(f"{path}: cannot write it ({err.strerror or err})") from None
        yield tmps
        for tmp, path in zip(tmps, paths, strict=True):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, file_mode(path))
        for tmp, path in zip(tmps, paths, strict=True):
            tmp.replace(path)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for folder in dict.fromkeys(path.parent for path in paths):
        with contextlib.suppress(OSError):  # some filesystems refuse to open directories
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | pathlib.Path) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside ``path`` to write; on success it is fsync'ed, given the mode of the file
    it replaces (a new file: ``0o666`` less the umask), and renamed over ``path`` (and the directory
    fsync'ed, so the rename survives a power cut); on error it is removed. A parent folder that cannot be
    created, or in which no file can be created, is a :class:`UserError`.

    Example::

        with atomic_output("exp/model.pt") as tmp:
            torch.save(payload, tmp)
    """
    with atomic_files(path) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_text_files(*paths: str | pathlib.Path) -> Iterator[list]:
    """Open text files (UTF-8) for ``paths`` to write line by line, committed together by :func:`atomic_files`:
    on success every one replaces its path, on an error while writing or syncing none does, so a long
    streamed write needs no memory for the whole text.

    Example::

        with atomic_text_files("out/a.tsv", "out/a.km") as (tsv, km):
            tsv.write(row)
    """
    with atomic_files(*paths) as tmps, contextlib.ExitStack() as stack:
        yield [stack.enter_context(open(t, "w", encoding="utf-8")) for t in tmps]


def replace_folder(stage: pathlib.Path, final: pathlib.Path) -> None:
    """Put the folder ``stage`` in the place of ``final`` (which need not exist): ``final`` is moved aside,
    ``stage`` renamed to it and the old folder removed; when the rename fails, ``final`` is put back."""
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    try:
        stage.rename(final)
    except BaseException:
        if old.exists():
            old.rename(final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def finish_staged(stage: pathlib.Path, final: pathlib.Path, output, exc: BaseException | None) -> None:
    """End a write of the folder ``stage`` (to replace ``final``) together with a file written through
    ``output``, an entered :func:`atomic_output` or :func:`atomic_files` context. With ``exc`` ``None`` the
    folder replaces ``final`` (:func:`replace_folder`) and then the file is committed; when ``exc`` is given
    or the swap fails, the folder is removed and the file's temporary goes with it (a failed swap raises)."""
    try:
        if exc is not None:
            raise exc
        replace_folder(stage, final)
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        output.__exit__(type(err), err, err.__traceback__)
        if err is exc:
            return
        raise
    output.__exit__(None, None, None)


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
