"""Audio features shared by training losses, metrics and evaluation: STFT magnitudes and log-mel spectrograms."""

from __future__ import annotations

import librosa
import torch
from torch import Tensor, nn


def stft_magnitude(wav: Tensor, n_fft: int, hop: int, window: Tensor) -> Tensor:
    """(B, 1, T) -> (B, n_fft // 2 + 1, frames) magnitude, float32 (STFT under autocast is not safe)."""
    with torch.autocast(wav.device.type, enabled=False):
        spec = torch.stft(
            wav.float().reshape(-1, wav.shape[-1]), n_fft, hop, window=window, center=True, return_complex=True
        )
        return spec.abs()


class MelSpectrogram(nn.Module):
    """Log10 mel spectrogram: STFT in torch, mel filters from librosa (Slaney norm).

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
        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("filters", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, wav: Tensor) -> Tensor:
        """(B, 1, T) -> (B, n_mels, frames)."""
        mag = stft_magnitude(wav, self.n_fft, self.hop, self.window)
        return torch.log10((self.filters @ mag).clamp_min(self.floor))
