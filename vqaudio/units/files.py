"""``vqaudio encode`` / ``decode`` over files, directories and globs: audio <-> codes files.

Formats of a codes file, chosen by its suffix: ``.vqc`` (the default; bit-packed with a header, see
:mod:`vqaudio.units.codesfile`), ``.npy`` (an ``(n_q, T)`` int16/int32 array) and ``.txt`` (one line of
units per level). Only ``.vqc`` records the model and the input's length: ``.npy`` and ``.txt`` decode to
``T * hop`` samples with any model whose codebook they fit.
"""

from __future__ import annotations

import glob
import logging
import pathlib
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import file_checksum
from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text
from .codesfile import CodesHeader, read_codes_file, write_codes_file
from .formats import write_npy

log = logging.getLogger(__name__)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".aiff", ".aif")
CODE_SUFFIXES = (".vqc", ".npy", ".txt")


@dataclass
class Job:
    """One file to convert: ``src`` -> ``dst``."""

    src: pathlib.Path
    dst: pathlib.Path


@dataclass
class Summary:
    files: int
    audio_seconds: float
    wall_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def plan(inputs: list[str], out: str, suffixes: tuple[str, ...], out_suffix: str, force: bool) -> list[Job]:
    """Jobs for ``inputs`` (files, directories searched recursively for ``suffixes``, globs).

    One input file and an ``out`` with a suffix: ``out`` is the file. Otherwise ``out`` is a directory and
    each file keeps its path relative to its input directory (or its name, for files and globs), with
    ``out_suffix``. Existing outputs are refused unless ``force``; two inputs mapping to one output too.
    """
    sources: list[tuple[pathlib.Path, pathlib.Path]] = []  # (file, path relative to its input)
    for item in inputs:
        p = pathlib.Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise UserError(f"{p}: no {'/'.join(suffixes)} files under this directory")
            sources += [(f, f.relative_to(p)) for f in found]
        elif p.is_file():
            sources.append((p, pathlib.Path(p.name)))
        elif glob.has_magic(item):
            found = sorted(pathlib.Path(f) for f in glob.glob(item, recursive=True) if pathlib.Path(f).is_file())
            if not found:
                raise UserError(f"{item}: the pattern matches no file")
            sources += [(f, pathlib.Path(f.name)) for f in found]
        else:
            raise UserError(f"{item}: no such file or directory")
    out_path = pathlib.Path(out)
    single = len(inputs) == 1 and pathlib.Path(inputs[0]).is_file() and out_path.suffix and not out_path.is_dir()
    if single:
        jobs = [Job(sources[0][0], out_path)]
    else:
        if out_path.exists() and not out_path.is_dir():
            raise UserError(f"{out}: several inputs need an output directory, and this is a file")
        jobs = [Job(src, out_path / rel.with_suffix(out_suffix)) for src, rel in sources]
    seen: dict[pathlib.Path, pathlib.Path] = {}
    for job in jobs:
        if job.dst in seen:
            raise UserError(f"{seen[job.dst]} and {job.src} would both write {job.dst}; encode them separately")
        seen[job.dst] = job.src
        if job.dst.exists() and not force:
            raise UserError(f"{job.dst} exists; pass -f/--force to overwrite")
    return jobs


def _progress(jobs: list[Job], desc: str):
    return tqdm(jobs, desc=desc, unit="file", file=sys.stderr, disable=not sys.stderr.isatty())


def write_codes(path: pathlib.Path, codes: np.ndarray, header: CodesHeader) -> None:
    """``(n_q, T)`` codes in the format of ``path``'s suffix."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        atomic_write_text(path, "".join(" ".join(map(str, level)) + "\n" for level in codes.tolist()))
    elif suffix == ".npy":
        write_npy(path, codes, header.codebook_size)
    else:
        write_codes_file(path, codes, header)


def read_codes(path: pathlib.Path) -> tuple[np.ndarray, CodesHeader | None]:
    """``(n_q, T)`` codes of a ``.vqc``, ``.npy`` or ``.txt`` file, and the ``.vqc`` header (else ``None``)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            rows = [[int(u) for u in line.split()] for line in path.read_text().splitlines() if line.strip()]
            if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
                raise UserError(f"{path}: expected one line of units per level, all of the same non-zero length")
            return np.array(rows, dtype=np.int64), None
        if suffix == ".npy":
            codes = np.load(path, allow_pickle=False)
            if codes.ndim != 2 or codes.shape[1] == 0 or not np.issubdtype(codes.dtype, np.integer):
                raise UserError(f"{path}: expected an integer array of shape (n_q, frames), got {codes.shape}")
            return codes.astype(np.int64), None
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read units ({err})") from None
    return read_codes_file(path)


def encode_files(codec, jobs: list[Job], n_q: int | None, model_path: str, device: str) -> Summary:
    """Encode every job's audio to its codes file; returns counts and timing."""
    from ..data.audio import load_audio

    checksum = file_checksum(model_path)
    t0, seconds = time.perf_counter(), 0.0
    for job in _progress(jobs, "encode"):
        wav = load_audio(str(job.src), codec.sample_rate)
        codes = codec.encode_chunked(torch.from_numpy(wav)[None, None].to(device), n_q=n_q)[0].cpu().numpy()
        header = CodesHeader(
            checksum, codec.sample_rate, len(wav), codes.shape[0], codec.codebook_size, codec.frame_rate
        )
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        write_codes(job.dst, codes, header)
        seconds += len(wav) / codec.sample_rate
    return Summary(len(jobs), seconds, time.perf_counter() - t0)


def decode_files(codec, jobs: list[Job], model_path: str, device: str, any_model: bool = False) -> Summary:
    """Decode every job's codes file to audio (the exact input length for ``.vqc``); returns counts and timing.

    A ``.vqc`` made by another model file is refused unless ``any_model``; codes that do not fit the model
    (levels or range) always are.
    """
    import soundfile as sf

    for job in jobs:
        if job.dst.suffix[1:].upper() not in sf.available_formats():
            raise UserError(f"{job.dst}: name the output with an audio extension (.wav, .flac, .ogg)")
    checksum = file_checksum(model_path)
    t0, seconds = time.perf_counter(), 0.0
    for job in _progress(jobs, "decode"):
        codes, header = read_codes(job.src)
        if header is not None and header.model_sha256 != checksum and not any_model:
            raise UserError(
                f"{job.src} was made by another model (sha256 {header.model_sha256[:12]}..., {model_path} is "
                f"{checksum[:12]}...); pass --any-model to decode it anyway"
            )
        if codes.shape[0] > codec.n_q or codes.min() < 0 or codes.max() >= codec.codebook_size:
            raise UserError(
                f"{job.src}: {codes.shape[0]} level(s) of units in [{codes.min()}, {codes.max()}], but {model_path} "
                f"takes at most {codec.n_q} level(s) of units in [0, {codec.codebook_size - 1}]"
            )
        length = header.num_samples if header is not None else None
        wav = codec.decode_utterance(torch.from_numpy(codes).to(device), length=length).cpu().numpy()
        job.dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(job.dst) as tmp:
            sf.write(tmp, wav, codec.sample_rate, format=job.dst.suffix[1:].upper())
        seconds += len(wav) / codec.sample_rate
    return Summary(len(jobs), seconds, time.perf_counter() - t0)
