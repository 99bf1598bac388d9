"""Unit files in the formats downstream tools read.

* Kaldi/ESPnet text: ``units`` (``utt u1 u2 ...``, level 0), ``units.level<q>`` for further levels,
  ``tokens.txt`` (ESPnet token list: ``<blank>``, one unit per line, ``<unk>``, ``<sos/eos>``), and
  ``units.json`` (model checksum, sample rate, frame rate, codebook size, n_q, dedup).
* ESPnet ``npy``: ``npy/<utt>.npy`` (an ``(T, n_q)`` int16/int32 array per utterance, time-major like
  ESPnet's npy features) and ``codes.scp`` (``utt /abs/path/utt.npy``).
* fairseq: ``<set>.tsv`` (root on line 1, then ``relpath<TAB>num_samples``) and ``<set>.km`` (one line of
  space-separated level-0 units per manifest row, same order).
All writers write temporary files (the npy arrays a fresh folder) and rename them into place only when all is
written, so a reader never sees a half-written file, and a merge that fails part-way replaces nothing.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import ClassVar

from ..config import from_dict
from ..data.kaldi import check_id
from ..errors import UserError
from ..fileio import atomic_output, atomic_text_files, atomic_write_text, finish_staged, make_dirs, path_inside


@dataclass
class UnitsInfo:
    """What ``units.json`` records about a set of units (``n_q``: residual levels written; ``levels`` in
    files before the rename)."""

    RENAMED: ClassVar[dict[str, str]] = {"levels": "n_q"}

    model_checksum: str
    sample_rate: int
    frame_rate: float
    codebook_size: int
    n_q: int
    dedup: bool
    num_utterances: int = 0
    num_failed: int = 0


def dedup_units(units: Sequence[int]) -> list[int]:
    """Run-length dedup: ``[5, 5, 3, 3, 3, 5] -> [5, 3, 5]`` (as unit LMs and unit ASR use)."""
    return [u for i, u in enumerate(units) if i == 0 or u != units[i - 1]]


def level_path(out_dir: str | pathlib.Path, level: int) -> pathlib.Path:
    """``units`` for level 0, ``units.level<q>`` for level q."""
    return pathlib.Path(out_dir) / ("units" if level == 0 else f"units.level{level}")


class _UnitNames(dict):
    """``str(unit)``, made once per distinct unit: joining these is 3-4x faster than ``str`` on every unit."""

    def __missing__(self, unit: int) -> str:
        self[unit] = name = str(unit)
        return name


class KaldiUnitsWriter:
    """Kaldi text units, one file per level (``units``, ``units.level<q>``: :func:`level_path`), streamed one
    utterance at a time, the files renamed into place together when the block ends without error. Utterances
    are written in the order given.

    Example::

        with KaldiUnitsWriter([level_path(out, 0), level_path(out, 1)]) as writer:
            writer.add("utt1", [[1, 2, 3], [4, 5, 6]])
    """

    def __init__(self, paths: Sequence[str | pathlib.Path]):
        self._files = atomic_text_files(*paths)
        self._name = _UnitNames().__getitem__

    def __enter__(self) -> KaldiUnitsWriter:
        self._levels = self._files.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._files.__exit__(*exc)

    def add(self, utt: str, codes: Sequence[Sequence[int]]) -> None:
        """``codes``: ``(n_q, T)`` units of ``utt``, a row per file."""
        if len(codes) != len(self._levels):
            raise ValueError(f"{utt}: {len(codes)} levels of units, the writer has {len(self._levels)}")
        for f, units in zip(self._levels, codes, strict=True):
            f.write(f"{utt} {' '.join(map(self._name, units))}\n")


def write_units(path: str | pathlib.Path, units: dict[str, Sequence[int]]) -> pathlib.Path:
    """Kaldi text ``utt u1 u2 ...`` in C-locale order of utterance ids, atomically."""
    with KaldiUnitsWriter([path]) as writer:
        for utt in sorted(units, key=str.encode):
            writer.add(utt, [units[utt]])
    return pathlib.Path(path)


def read_units(path: str | pathlib.Path) -> dict[str, list[int]]:
    """Read a Kaldi text unit file (``units`` or ``units.level<q>``), or a ``units`` dir's level 0.

    Raises ``ValueError`` naming the file and line for a non-integer unit or a duplicate utterance.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "units"
    out: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            utt = check_id(parts[0], path, n)
            if utt in out:
                raise UserError(f"{path}:{n}: duplicate utterance {utt!r}")
            try:
                out[utt] = [int(u) for u in parts[1:]]
            except ValueError:
                raise UserError(f"{path}:{n}: units must be integers, got {line.strip()[:80]!r}") from None
    return out


def read_levels(out_dir: str | pathlib.Path, n_q: int | None = None) -> dict[str, list[list[int]]]:
    """``{utt: [level0 units, level1 units, ...]}`` from a units dir, its first ``n_q`` levels (default all):
    each utterance's codes are ``(n_q, T)``, one row for a single codebook."""
    out_dir = pathlib.Path(out_dir)
    info = read_info(out_dir)
    n_q = info.n_q if n_q is None else n_q
    if not 1 <= n_q <= info.n_q:
        raise UserError(f"{out_dir}: n_q must lie in [1, {info.n_q}] (the levels written there), got {n_q}")
    per_level = [read_units(level_path(out_dir, q)) for q in range(n_q)]
    for q, table in enumerate(per_level[1:], 1):
        if table.keys() != per_level[0].keys():
            raise UserError(f"{level_path(out_dir, q)}: utterances differ from {level_path(out_dir, 0)}")
    return {utt: [table[utt] for table in per_level] for utt in per_level[0]}


def write_info(out_dir: str | pathlib.Path, info: UnitsInfo) -> pathlib.Path:
    return atomic_write_text(pathlib.Path(out_dir) / "units.json", json.dumps(asdict(info), indent=2) + "\n")


def read_info(out_dir: str | pathlib.Path) -> UnitsInfo:
    path = pathlib.Path(out_dir) / "units.json"
    if not path.is_file():
        raise UserError(f"{path} not found: is {out_dir} a directory written by `vqaudio extract-units`?")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); extract the units again") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return from_dict(UnitsInfo, data, where=str(path))


def write_token_list(path: str | pathlib.Path, codebook_size: int) -> pathlib.Path:
    """ESPnet token list: ``<blank>``, units ``0 .. K-1``, ``<unk>``, ``<sos/eos>``."""
    tokens = ["<blank>", *map(str, range(codebook_size)), "<unk>", "<sos/eos>"]
    return atomic_write_text(path, "\n".join(tokens) + "\n")


def unit_dtype(codebook_size: int):
    """The smallest integer type holding units ``[0, codebook_size)``: int16, or int32 above 2**15 codes."""
    import numpy as np

    return np.int16 if codebook_size <= 2**15 else np.int32


def npy_array(codes, codebook_size: int):
    """``codes`` as an array of :func:`unit_dtype`."""
    import numpy as np

    return np.asarray(codes).astype(unit_dtype(codebook_size))


def write_npy(path: pathlib.Path, codes, codebook_size: int) -> pathlib.Path:
    """``codes`` as an ``.npy`` of :func:`npy_array`'s type, atomically."""
    import numpy as np

    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, npy_array(codes, codebook_size))
    return path


class NpyWriter:
    """ESPnet ``npy/<utt>.npy`` arrays ``(T, n_q)`` and ``codes.scp`` listing them. The arrays go to a fresh
    folder that replaces ``npy/`` (:func:`~vqaudio.fileio.replace_folder`), and ``codes.scp`` is renamed into
    place after it, when the block ends without error; on error neither is touched."""

    def __init__(self, out_dir: str | pathlib.Path, codebook_size: int):
        out_dir = pathlib.Path(out_dir)
        self.final, self.stage = out_dir / "npy", out_dir / f".npy.tmp{os.getpid()}"
        self._scp = atomic_text_files(out_dir / "codes.scp")
        self.codebook_size = codebook_size

    def __enter__(self) -> NpyWriter:
        shutil.rmtree(self.stage, ignore_errors=True)
        make_dirs(self.stage)
        self._listed = self.final.resolve()  # where the arrays will be
        (self._lines,) = self._scp.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        finish_staged(self.stage, self.final, self._scp, exc)

    def add(self, utt: str, codes: Sequence[Sequence[int]]) -> None:
        """``codes``: ``(n_q, T)`` units of ``utt``."""
        import numpy as np

        name = path_inside(self.stage, utt, ".npy").name
        with open(self.stage / name, "wb") as f:
            np.save(f, npy_array(codes, self.codebook_size).T)
        self._lines.write(f"{utt} {self._listed / name}\n")


def write_npy_scp(
    out_dir: str | pathlib.Path, per_utt: dict[str, Sequence[Sequence[int]]], codebook_size: int
) -> pathlib.Path:
    """``npy/<utt>.npy`` (``(T, n_q)``) for each utterance and ``codes.scp`` listing them, each file atomically."""
    with NpyWriter(out_dir, codebook_size) as writer:
        for utt in sorted(per_utt, key=str.encode):
            writer.add(utt, per_utt[utt])
    return pathlib.Path(out_dir) / "codes.scp"


class FairseqWriter:
    """fairseq manifest ``<name>.tsv`` and level-0 units ``<name>.km`` streamed row by row in the same order,
    both renamed into place when the block ends without error; ``root`` is the manifest's first line (audio
    paths are relative to it)."""

    def __init__(self, out_dir: str | pathlib.Path, name: str, root: str):
        out_dir = pathlib.Path(out_dir)
        self._files = atomic_text_files(out_dir / f"{name}.tsv", out_dir / f"{name}.km")
        self.root = root
        self._name = _UnitNames().__getitem__

    def __enter__(self) -> FairseqWriter:
        self._tsv, self._km = self._files.__enter__()
        self._tsv.write(self.root + "\n")
        return self

    def __exit__(self, *exc) -> None:
        self._files.__exit__(*exc)

    def add(self, rel: str, num_samples: int, units: Sequence[int]) -> None:
        self._tsv.write(f"{rel}\t{num_samples}\n")
        self._km.write(" ".join(map(self._name, units)) + "\n")


def write_fairseq(
    out_dir: str | pathlib.Path, name: str, root: str, rows: Iterable[tuple[str, int, Sequence[int]]]
) -> tuple[pathlib.Path, pathlib.Path]:
    """fairseq manifest ``<name>.tsv`` and units ``<name>.km`` in the same order.

    Args:
        root: the manifest's first line (audio paths are relative to it).
        rows: ``(relative_path, num_samples, level-0 units)`` per utterance.
    """
    with FairseqWriter(out_dir, name, root) as writer:
        for rel, n, units in rows:
            writer.add(rel, n, units)
    return pathlib.Path(out_dir) / f"{name}.tsv", pathlib.Path(out_dir) / f"{name}.km"


def read_fairseq(out_dir: str | pathlib.Path, name: str) -> tuple[str, list[tuple[str, int, list[int]]]]:
    """Inverse of :func:`write_fairseq`: the root and ``(relpath, num_samples, units)`` rows."""
    tsv = pathlib.Path(out_dir) / f"{name}.tsv"
    km = pathlib.Path(out_dir) / f"{name}.km"
    lines = tsv.read_text().splitlines()
    units = km.read_text().splitlines()
    if len(lines) - 1 != len(units):
        raise UserError(f"{tsv} has {len(lines) - 1} rows but {km} has {len(units)} lines")
    rows = []
    for n, (row, km_line) in enumerate(zip(lines[1:], units, strict=True), 2):
        try:
            rel, samples = row.split("\t")
            rows.append((rel, int(samples), [int(u) for u in km_line.split()]))
        except ValueError:
            raise UserError(f"{tsv}:{n}: expected 'relpath<TAB>num_samples', got {row!r}") from None
    return lines[0], rows
