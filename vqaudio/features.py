"""Audio features shared by training losses, metrics and evaluation: STFT magnitudes and log-mel spectrograms."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

# Slaney's mel scale (Auditory Toolbox), as librosa's default (htk=False): linear below 1 kHz, log above.
_F_SP = 200.0 / 3  # Hz per mel below the break
_BREAK_HZ = 1000.0
_BREAK_MEL = _BREAK_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    high = hz >= _BREAK_HZ
    return np.where(high, _BREAK_MEL + np.log(np.maximum(hz, _BREAK_HZ) / _BREAK_HZ) / _LOG_STEP, mel)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    high = mel >= _BREAK_MEL
    return np.where(high, _BREAK_HZ * np.exp(_LOG_STEP * (mel - _BREAK_MEL)), _F_SP * mel)


def slaney_mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` float32 triangular mel filters on Slaney's scale, each scaled to unit area
    (``norm="slaney"``): the values of ``librosa.filters.mel`` with its defaults (tested), without importing
    ``scipy.signal`` and numba, which ``librosa.filters`` pulls in (0.7-0.9 s, most of a short job's start)."""
    if fmax is None:
        fmax = sample_rate / 2.0
    if not 0 <= fmin < fmax:
        raise ValueError(f"mel filters need 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax}")
    bins = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))  # (n_mels + 2,) Hz
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]  # (n_mels + 2, bins)
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # in float32, as librosa rounds: equal to the bit
    return weights


def stft_magnitude(wav: Tensor, n_fft: int, hop: int, window: Tensor) -> Tensor:
    """(B, 1, T) -> (B, n_fft // 2 + 1, frames) magnitude, float32 (STFT under autocast is not safe)."""
    with torch.autocast(wav.device.type, enabled=False):
        spec = torch.stft(
            wav.float().reshape(-1, wav.shape[-1]), n_fft, hop, window=window, center=True, return_complex=True
        )
        return spec.abs()


class MelSpectrogram(nn.Module):
    """Log10 mel spectrogram: STFT in torch, Slaney mel filters (:func:`slaney_mel_filters`, librosa's values).

    Args:
        sample_rate: Hz.
        n_fft: window and FFT size; hop: frame shift in samples.
        n_mels: mel bands.
        fmin, fmax: band edges in Hz (``fmax=None`` is Nyquist).
        floor: clamp before the log.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop: int = 256,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float | None = None,
        floor: float = 1e-5,
    ) -> None:
        super().__init__()
        self.n_fft, self.hop, self.floor = n_fft, hop, floor
        fb = slaney_mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)
        self.register_buffer("filters", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:
        """(B, 1, T) -> (B, n_mels, frames)."""
        mag = stft_magnitude(wav, self.n_fft, self.hop, self.window)
        return torch.log10((self.filters @ mag).clamp_min(self.floor))
