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
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import file_checksum, model_checksum
from ..data.kaldi import text_lines
from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text, make_dirs
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
class Plan:
    """What ``encode``/``decode`` will do: ``jobs`` to run; ``kept``, outputs already there from an earlier run
    (kept, not redone, without ``force``); ``ignored``, input files whose suffix the command does not read."""

    jobs: list[Job]
    kept: list[Job] = field(default_factory=list)
    ignored: list[pathlib.Path] = field(default_factory=list)


@dataclass
class Summary:
    files: int
    audio_seconds: float
    wall_seconds: float
    failed: list[tuple[pathlib.Path, str]] = field(default_factory=list)

    @property
    def real_time_factor(self) -> float:
        """Audio seconds per wall second."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else float("inf")


def split_inputs(inputs: list[str], out: str | None) -> tuple[list[str], str]:
    """The inputs and the output of ``encode``/``decode``: ``-o`` when given; else, with exactly two
    arguments, the second when it does not exist yet (an existing file is an input, never overwritten as
    the output)."""
    if out is not None:
        return inputs, out
    if len(inputs) == 2 and not pathlib.Path(inputs[1]).exists():
        return inputs[:1], inputs[1]
    raise UserError(
        f"{len(inputs)} input(s) and no -o/--out: name the output with -o (a file for one input, a directory for "
        "several); an existing file is never taken as the output"
    )


def _check_parent(path: pathlib.Path) -> None:
    """The nearest existing ancestor of ``path`` must be a directory, or nothing can be written under it."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{path}: cannot be created, {parent} is a file")
            return


def plan(
    inputs: list[str],
    out: str,
    suffixes: tuple[str, ...],
    out_suffix: str,
    force: bool,
    out_suffixes: tuple[str, ...] | None = None,
) -> Plan:
    """Jobs for ``inputs`` (files, directories searched recursively for ``suffixes``, globs).

    One input file and an ``out`` with a suffix: ``out`` is the file (its suffix one of ``out_suffixes``
    when given), refused when it exists unless ``force``. Otherwise ``out`` is a directory and each file keeps
    its path relative to its input directory (or its name, for files and globs), with ``out_suffix``; outputs
    already there are kept (a rerun resumes) unless ``force``. Files of other suffixes are ignored (listed
    in the plan), and so are files under ``out`` when it lies inside an input directory; two inputs mapping to
    one output, or an output that is an input, are refused.
    """
    sources: list[tuple[pathlib.Path, pathlib.Path]] = []  # (file, path relative to its input)
    ignored: list[pathlib.Path] = []
    out_dir = pathlib.Path(out).resolve()

    def take(files, root: pathlib.Path | None) -> None:
        for f in files:
            if root is not None and out_dir in f.resolve().parents:
                continue  # an output folder inside an input folder: an earlier run's outputs are no inputs
            if f.suffix.lower() in suffixes:
                sources.append((f, f.relative_to(root) if root is not None else pathlib.Path(f.name)))
            else:
                ignored.append(f)

    for item in inputs:
        p = pathlib.Path(item)
        if p.is_dir():
            take(sorted(f for f in p.rglob("*") if f.is_file()), p)
        elif p.is_file():
            take([p], None)
        elif glob.has_magic(item):
            found = sorted(pathlib.Path(f) for f in glob.glob(item, recursive=True) if pathlib.Path(f).is_file())
            if not found:
                raise UserError(f"{item}: the pattern matches no file")
            take(found, None)
        else:
            raise UserError(f"{item}: no such file or directory")
    if not sources:
        raise UserError(f"{' '.join(inputs)}: no {'/'.join(suffixes)} files among the inputs")
    out_path = pathlib.Path(out)
    single = len(inputs) == 1 and pathlib.Path(inputs[0]).is_file() and out_path.suffix and not out_path.is_dir()
    if single:
        if out_suffixes is not None and out_path.suffix.lower() not in out_suffixes:
            raise UserError(f"{out}: name the output with one of {', '.join(out_suffixes)}")
        _check_parent(out_path.parent)
        if out_path.exists() and not force:
            raise UserError(f"{out_path} exists; pass -f/--force to overwrite")
        jobs = [Job(sources[0][0], out_path)]
        kept: list[Job] = []
    else:
        if out_path.exists() and not out_path.is_dir():
            raise UserError(f"{out}: several inputs need an output directory, and this is a file")
        _check_parent(out_path)
        every = [Job(src, out_path / rel.with_suffix(out_suffix)) for src, rel in sources]
        kept = [job for job in every if job.dst.exists() and not force]
        jobs = [job for job in every if force or not job.dst.exists()]
    seen: dict[pathlib.Path, pathlib.Path] = {}
    inputs_resolved = {src.resolve() for src, _ in sources}
    for job in [*jobs, *kept]:
        if job.dst in seen:
            raise UserError(f"{seen[job.dst]} and {job.src} would both write {job.dst}; convert them separately")
        seen[job.dst] = job.src
        if job.dst.resolve() in inputs_resolved:
            raise UserError(f"{job.dst} is an input; choose another output")
    return Plan(jobs, kept, ignored)


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


def _extract_units_npy(path: pathlib.Path) -> bool:
    """Whether ``path`` is one of ``extract-units --format npy``'s ``OUT/npy/<utt>.npy`` (listed in
    ``OUT/codes.scp``), which are time-major ``(T, n_q)`` as ESPnet's npy features."""
    return path.parent.name == "npy" and (path.parent.parent / "codes.scp").is_file()


def read_codes(path: pathlib.Path) -> tuple[np.ndarray, CodesHeader | None]:
    """``(n_q, T)`` codes of a ``.vqc``, ``.npy`` or ``.txt`` file, and the ``.vqc`` header (else ``None``).

    An ``.npy`` is ``(n_q, T)`` as ``encode`` writes it, except ``extract-units``' ``OUT/npy/<utt>.npy``
    (beside ``OUT/codes.scp``), which is ``(T, n_q)`` and is read transposed."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            rows = [[int(u) for u in line.split()] for _, line in text_lines(path) if line.strip()]
            if not rows or len({len(r) for r in rows}) != 1 or not rows[0]:
                raise UserError(f"{path}: expected one line of units per level, all of the same non-zero length")
            return np.array(rows, dtype=np.int64), None
        if suffix == ".npy":
            codes = np.load(path, allow_pickle=False)
            if not isinstance(codes, np.ndarray):
                raise UserError(f"{path}: an .npz archive, not an .npy array; save the codes with numpy.save")
            if codes.ndim != 2 or codes.shape[1] == 0 or not np.issubdtype(codes.dtype, np.integer):
                raise UserError(
                    f"{path}: expected an integer array of shape (n_q, frames), got {codes.dtype} {codes.shape}"
                )
            if _extract_units_npy(path):
                codes = codes.T
            return codes.astype(np.int64), None
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not UTF-8 text ({err.reason})") from None
    except OverflowError:
        raise UserError(f"{path}: a unit too large for a 64-bit integer") from None
    except (OSError, ValueError) as err:
        if isinstance(err, UserError):
            raise
        raise UserError(f"{path}: cannot read units ({err})") from None
    return read_codes_file(path)


def _fit_problem(codes: np.ndarray, codec, path: pathlib.Path, model_path: str) -> str | None:
    """Why ``codes`` cannot be decoded by ``codec``, or ``None``."""
    if codes.shape[0] <= codec.n_q and codes.min() >= 0 and codes.max() < codec.codebook_size:
        return None
    hint = ""
    if path.suffix.lower() == ".npy" and codes.shape[0] > codec.n_q >= codes.shape[1]:
        hint = " (a time-major (T, n_q) array? encode's .npy files are (n_q, T); transpose it)"
    return (
        f"{codes.shape[0]} level(s) of units in [{codes.min()}, {codes.max()}], but {model_path} "
        f"takes at most {codec.n_q} level(s) of units in [0, {codec.codebook_size - 1}]{hint}"
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def encode_files(codec, jobs: list[Job], n_q: int | None, model_path: str, device: str) -> Summary:
    """Encode every job's audio to its codes file; a file that fails (unreadable or empty audio, an output
    that cannot be written) is listed in ``Summary.failed`` with a one-line reason and the others go on."""
    from ..data.audio import load_audio

    checksum = model_checksum(model_path)
    t0, seconds, failed = time.perf_counter(), 0.0, []
    for job in _progress(jobs, "encode"):
        try:
            wav = load_audio(str(job.src), codec.sample_rate)
            codes = codec.encode_chunked(torch.from_numpy(wav)[None, None].to(device), n_q=n_q)[0].cpu().numpy()
            header = CodesHeader(
                checksum, codec.sample_rate, len(wav), codes.shape[0], codec.codebook_size, codec.frame_rate
            )
            make_dirs(job.dst.parent)
            write_codes(job.dst, codes, header)
        except (ValueError, OSError) as err:  # UserError and AudioError are ValueErrors
            failed.append((job.src, _one_line(err)))
            continue
        seconds += len(wav) / codec.sample_rate
    return Summary(len(jobs) - len(failed), seconds, time.perf_counter() - t0, failed)


def decode_files(codec, jobs: list[Job], model_path: str, device: str, any_model: bool = False) -> Summary:
    """Decode every job's codes file to audio (the exact input length for ``.vqc``); a file that fails (damaged,
    made by another model, codes the model cannot decode) is listed in ``Summary.failed`` with a one-line
    reason and the others go on.

    A ``.vqc`` made by another model is refused unless ``any_model``; codes that do not fit the model
    (levels or range) always are.
    """
    import soundfile as sf

    for job in jobs:
        if job.dst.suffix[1:].upper() not in sf.available_formats():
            raise UserError(f"{job.dst}: name the output with an audio extension (.wav, .flac, .ogg)")
    ids = {model_checksum(model_path), file_checksum(model_path)}
    t0, seconds, failed = time.perf_counter(), 0.0, []
    for job in _progress(jobs, "decode"):
        try:
            codes, header = read_codes(job.src)
            if header is not None and header.model_sha256 not in ids and not any_model:
                raise UserError(
                    f"{job.src} was made by another model (checksum {header.model_sha256[:12]}..., {model_path} "
                    f"is {min(ids)[:12]}...); pass --any-model to decode it anyway"
                )
            problem = _fit_problem(codes, codec, job.src, model_path)
            if problem is not None:
                raise UserError(f"{job.src}: {problem}")
            length = header.num_samples if header is not None else None
            wav = codec.decode_utterance(torch.from_numpy(codes).to(device), length=length).cpu().numpy()
            make_dirs(job.dst.parent)
            with atomic_output(job.dst) as tmp:
                sf.write(tmp, wav, codec.sample_rate, format=job.dst.suffix[1:].upper())
        except (ValueError, OSError, sf.LibsndfileError) as err:
            failed.append((job.src, _one_line(err)))
            continue
        seconds += len(wav) / codec.sample_rate
    return Summary(len(jobs) - len(failed), seconds, time.perf_counter() - t0, failed)
