"""Loading audio as float32 mono at a target rate: files, ``cmd |`` pipes, segments, lhotse cuts; conversions
logged.

A source that starts with :data:`CUT_SOURCE` is a lhotse cut in JSON (what :mod:`vqaudio.data.cuts` makes of a
cut that is not a plain span of one file): lhotse reads it, the cut's own channels (a ``MonoCut`` its channel,
a ``MultiCut`` its channels), which are then averaged to mono like the channels of a file.

A ``wav.scp`` entry ending in ``|`` is a shell command (Kaldi's convention): reading it runs ``/bin/sh``
with the entry's text, so a data dir is code; only use data dirs you trust. Each command runs in its own
process group with stdin from ``/dev/null`` and a timeout (:func:`set_pipe_timeout`, ``--pipe-timeout``);
a command that fails or times out is an :class:`AudioError` for that utterance only.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess

import librosa
import numpy as np
import soundfile as sf

from ..errors import UserError

log = logging.getLogger(__name__)


PIPE_TIMEOUT = 300.0  # seconds a ``cmd |`` entry may run; see set_pipe_timeout
CUT_SOURCE = "lhotse-cut:"  # prefix of a source that is a lhotse cut in JSON


def is_file_source(source: str) -> bool:
    """Whether ``source`` names an audio file (not a ``cmd |`` pipe, not a lhotse cut)."""
    return not source.rstrip().endswith("|") and not source.startswith(CUT_SOURCE)


class AudioError(UserError):
    """Audio that cannot be used; the message names the source and the reason."""


def set_pipe_timeout(seconds: float) -> None:
    """Seconds a ``cmd |`` entry of a ``wav.scp`` may run before it is killed (its utterance fails)."""
    global PIPE_TIMEOUT
    if not seconds > 0:
        raise UserError(f"--pipe-timeout must be > 0 seconds, got {seconds}")
    PIPE_TIMEOUT = float(seconds)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs, newlines included, become one space), its last ``limit`` chars."""
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]


def run_pipe(cmd: str, timeout: float | None = None) -> bytes:
    """stdout of the shell command ``cmd``, run with stdin from /dev/null in its own process group.

    Raises :class:`AudioError` (one line: the command, the exit status or the timeout, the end of its
    stderr decoded with replacement) when it fails or runs past ``timeout`` (default :data:`PIPE_TIMEOUT`);
    on a timeout the whole process group is killed, so no stage of a pipeline outlives it.
    """
    timeout = PIPE_TIMEOUT if timeout is None else timeout
    proc = subprocess.Popen(
        cmd,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AudioError(f"{cmd!r}: no result after {timeout:g} s (--pipe-timeout); killed") from None
    if proc.returncode != 0:
        reason = one_line(err.decode("utf-8", errors="replace"))
        raise AudioError(f"{cmd!r}: command failed ({proc.returncode}): {reason}")
    return out


def _read_cut(source: str, start: float, end: float | None, label: str) -> tuple[np.ndarray, int]:
    """``(T, C)`` samples of the lhotse cut in ``source`` (:data:`CUT_SOURCE` + JSON) from ``start`` to ``end``
    seconds of the cut, and its sample rate."""
    from ..scoring.packages import require

    require("lhotse", "reading a lhotse cut manifest", extra="lhotse")
    from lhotse.serialization import deserialize_item

    try:
        cut = deserialize_item(json.loads(source[len(CUT_SOURCE) :]))
        wav = np.asarray(cut.load_audio(), dtype=np.float32)
    except Exception as err:  # lhotse raises many kinds: a missing file, a failed command, a bad source
        reason = f"{type(err).__name__}: {one_line(str(err))}"
        raise AudioError(f"{label}: lhotse cannot read the cut's audio ({reason})") from None
    sr = int(cut.sampling_rate)
    wav = wav.reshape(-1, wav.shape[-1]).T  # (C, T) -> (T, C)
    first = int(round(start * sr))
    last = wav.shape[0] if end is None else min(int(round(end * sr)), wav.shape[0])
    return wav[first:last], sr


def _read(source: str, start: float, end: float | None, label: str) -> tuple[np.ndarray, int]:
    if source.startswith(CUT_SOURCE):
        return _read_cut(source, start, end, label)
    source = source.strip()
    if source.endswith("|"):
        handle = io.BytesIO(run_pipe(source[:-1].strip()))
    else:
        handle = source
    try:
        with sf.SoundFile(handle) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            last = f.frames if end is None else min(int(round(end * sr)), f.frames)
            if first >= f.frames and f.frames > 0:
                raise AudioError(f"{source}: segment start {start}s is past the end ({f.frames / sr:.3f}s)")
            f.seek(first)
            wav = f.read(max(last - first, 0), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, OSError) as err:
        raise AudioError(f"{source}: unreadable audio ({one_line(str(err))})") from err
    return wav, sr


def load_audio(
    source: str, sample_rate: int, start: float = 0.0, end: float | None = None, name: str | None = None
) -> np.ndarray:
    """Read ``source`` (a path, a Kaldi ``cmd |`` or a :data:`CUT_SOURCE` cut) as float32 mono at ``sample_rate``.

    Multi-channel audio is averaged to mono and other rates are resampled (soxr, high quality); both are
    logged. Empty audio and NaN/Inf samples raise :class:`AudioError` naming the source.

    Returns:
        ``(T,)`` float32 samples in [-1, 1] (files are not normalised).
    """
    label = name or ("a lhotse cut" if source.startswith(CUT_SOURCE) else source)
    wav, sr = _read(source, start, end, label)
    if wav.shape[0] == 0:
        raise AudioError(f"{label}: empty audio (0 samples)")
    if wav.shape[1] > 1:
        log.info("%s: downmixing %d channels to mono", label, wav.shape[1])
        wav = wav.mean(axis=1)
    else:
        wav = wav[:, 0]  # the mean of one channel, without a pass over it
    if not np.isfinite(wav).all():
        raise AudioError(f"{label}: {int((~np.isfinite(wav)).sum())} NaN/Inf sample(s)")
    if sr != sample_rate:
        log.info("%s: resampling %d Hz -> %d Hz", label, sr, sample_rate)
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(wav, dtype=np.float32)


MAX_CHANNELS = 8  # a 2-D array whose shorter side is at most this is (channels, samples) or (samples, channels)


def as_waveform(x, name: str, sample_rate: int | None = None, target_rate: int | None = None) -> np.ndarray:
    """What the Python API takes as audio, as :func:`load_audio` gives it: ``(T,)`` float32 mono.

    ``x`` is a numpy array, a torch tensor or a sequence of samples: ``(T,)``, ``(1, T)``, ``(1, 1, T)``, or
    several channels as ``(C, T)`` or ``(T, C)`` (the shorter side, at most 8, is the channels: mixed down by
    their mean, as ``soundfile.read`` or ``torchaudio.load`` give them). Floats are taken as they are; integer
    samples are scaled by their type's range (int16 by 1/32768). With ``sample_rate`` and ``target_rate``, the
    audio is resampled (soxr, high quality) from the one to the other.

    Raises:
        UserError (a ``ValueError``) naming ``name``: no samples, a NaN/Inf sample, booleans or complex numbers,
        or a shape that is not a waveform.
    """
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    wav = np.asarray(x)
    if wav.dtype == bool or np.iscomplexobj(wav) or not (np.issubdtype(wav.dtype, np.number)):
        raise UserError(f"{name}: expected real audio samples, got an array of {wav.dtype}")
    if np.issubdtype(wav.dtype, np.integer):
        info = np.iinfo(wav.dtype)
        scale = float(info.max) + 1.0
        wav = (wav.astype(np.float64) - (0.0 if info.min < 0 else scale / 2)) / (scale if info.min < 0 else scale / 2)
    shape = wav.shape
    wav = wav.reshape(wav.shape[-1]) if wav.ndim >= 1 and wav.size == wav.shape[-1] else wav
    if wav.ndim == 2 and min(wav.shape) <= MAX_CHANNELS:
        wav = wav.mean(axis=int(np.argmin(wav.shape)))
    if wav.ndim != 1:
        raise UserError(
            f"{name}: expected a waveform (T,), (1, T) or channels (C, T) / (T, C) with C <= {MAX_CHANNELS}, "
            f"got shape {tuple(shape)}"
        )
    if wav.shape[0] == 0:
        raise UserError(f"{name}: no samples")
    if not np.isfinite(wav).all():
        raise UserError(f"{name}: {int((~np.isfinite(wav)).sum())} NaN/Inf sample(s)")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if sample_rate is not None and target_rate is not None and sample_rate != target_rate:
        if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
            raise UserError(f"sample_rate of {name}: expected a positive integer in Hz, got {sample_rate!r}")
        wav = librosa.resample(wav, orig_sr=int(sample_rate), target_sr=target_rate, res_type="soxr_hq")
    return wav
