"""Loading audio as float32 mono at a target rate: files, ``cmd |`` pipes, segments; conversions logged."""

from __future__ import annotations

import io
import logging
import subprocess

import librosa
import numpy as np
import soundfile as sf

from ..errors import UserError

log = logging.getLogger(__name__)


class AudioError(UserError):
    """Audio that cannot be used; the message names the source and the reason."""


def _read(source: str, start: float, end: float | None) -> tuple[np.ndarray, int]:
    source = source.strip()
    if source.endswith("|"):
        cmd = source[:-1].strip()
        proc = subprocess.run(cmd, shell=True, capture_output=True, check=False)
        if proc.returncode != 0:
            raise AudioError(f"{cmd!r}: command failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
        handle = io.BytesIO(proc.stdout)
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
        raise AudioError(f"{source}: unreadable audio ({err})") from err
    return wav, sr


def load_audio(
    source: str, sample_rate: int, start: float = 0.0, end: float | None = None, name: str | None = None
) -> np.ndarray:
    """Read ``source`` (a path or a Kaldi ``cmd |``) as float32 mono at ``sample_rate``.

    Multi-channel audio is averaged to mono and other rates are resampled (soxr, high quality); both are
    logged. Empty audio and NaN/Inf samples raise :class:`AudioError` naming the source.

    Returns:
        ``(T,)`` float32 samples in [-1, 1] (files are not normalised).
    """
    label = name or source
    wav, sr = _read(source, start, end)
    if wav.shape[0] == 0:
        raise AudioError(f"{label}: empty audio (0 samples)")
    if wav.shape[1] > 1:
        log.info("%s: downmixing %d channels to mono", label, wav.shape[1])
    wav = wav.mean(axis=1)
    if not np.isfinite(wav).all():
        raise AudioError(f"{label}: {int((~np.isfinite(wav)).sum())} NaN/Inf sample(s)")
    if sr != sample_rate:
        log.info("%s: resampling %d Hz -> %d Hz", label, sr, sample_rate)
        wav = librosa.resample(wav, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(wav, dtype=np.float32)
