"""Gross pitch error and voicing decision error of a hypothesis's F0 track against a reference's.

F0 comes from librosa's pYIN (Mauch and Dixon 2014) at 16 kHz: 50-600 Hz, 64 ms frames, a 10 ms hop. A track
with no voiced frame (silence, noise, whisper) is simply all unvoiced. The definitions (Nakatani et al. 2008,
as used by Chu and Alwan 2009):

- gross pitch error (GPE): among frames voiced in both tracks, the fraction whose hypothesis F0 is more than
  20 % away from the reference F0; undefined (NaN) when no frame is voiced in both;
- voicing decision error (VDE): the fraction of all frames whose voiced/unvoiced decisions differ.

Tracks of different length (a codec pads to whole frames) are compared over the shorter one. Only meaningful
where the speaker (and so the intended pitch) is the same: resynthesis, not conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FMIN, FMAX = 50.0, 600.0
FRAME_LENGTH, HOP_LENGTH = 1024, 160
GROSS_ERROR = 0.2


def f0_track(wav: np.ndarray, sample_rate: int = 16000) -> tuple[np.ndarray, np.ndarray]:
    """``(f0, voiced)`` per 10 ms frame: F0 in Hz (0 where unvoiced) and the voicing decision."""
    import librosa

    wav = np.asarray(wav, dtype=np.float32).ravel()
    if sample_rate != 16000:
        wav = librosa.resample(wav, orig_sr=sample_rate, target_sr=16000)
    if wav.size == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    f0, voiced, _ = librosa.pyin(wav, fmin=FMIN, fmax=FMAX, sr=16000, frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH)
    voiced = np.asarray(voiced, dtype=bool) & np.isfinite(f0)
    return np.where(voiced, f0, 0.0), voiced


@dataclass(frozen=True)
class PitchErrors:
    """Frame counts behind GPE and VDE, so that corpus figures are totals over totals."""

    gross_errors: int
    both_voiced: int
    voicing_errors: int
    frames: int

    @property
    def gross_pitch_error(self) -> float:
        return self.gross_errors / self.both_voiced if self.both_voiced else float("nan")

    @property
    def voicing_decision_error(self) -> float:
        return self.voicing_errors / self.frames if self.frames else float("nan")

    def __add__(self, other: PitchErrors) -> PitchErrors:
        return PitchErrors(
            self.gross_errors + other.gross_errors,
            self.both_voiced + other.both_voiced,
            self.voicing_errors + other.voicing_errors,
            self.frames + other.frames,
        )


def pitch_errors(
    ref: tuple[np.ndarray, np.ndarray],
    hyp: tuple[np.ndarray, np.ndarray],
) -> PitchErrors:
    """GPE and VDE counts of the hypothesis track ``hyp`` against ``ref``, both ``(f0, voiced)`` of
    :func:`f0_track`."""
    n = min(len(ref[0]), len(hyp[0]))
    f_ref, v_ref = np.asarray(ref[0][:n], dtype=np.float64), np.asarray(ref[1][:n], dtype=bool)
    f_hyp, v_hyp = np.asarray(hyp[0][:n], dtype=np.float64), np.asarray(hyp[1][:n], dtype=bool)
    both = v_ref & v_hyp
    gross = np.abs(f_hyp[both] / f_ref[both] - 1.0) > GROSS_ERROR
    return PitchErrors(int(gross.sum()), int(both.sum()), int((v_ref != v_hyp).sum()), n)
