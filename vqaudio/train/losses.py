"""Reconstruction losses over waveforms ``(B, 1, T)``: L1, multi-resolution STFT, multi-scale log-mel."""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import torch
import torch.nn.functional as F
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


class MultiScaleMelLoss(nn.Module):
    """Mean L1 distance between log-mel spectrograms at several window sizes (DAC sec. 3.3, scaled to 16 kHz).

    Args:
        sample_rate: Hz.
        windows: window sizes in samples (hop = window / 4).
        n_mels: mel bands per window size.
    """

    def __init__(
        self,
        sample_rate: int,
        windows: Sequence[int] = (64, 128, 256, 512, 1024, 2048),
        n_mels: Sequence[int] = (8, 16, 32, 64, 128, 128),
    ) -> None:
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError(f"windows and n_mels must have the same length, got {list(windows)} and {list(n_mels)}")
        self.mels = nn.ModuleList(
            MelSpectrogram(sample_rate, n_fft=w, hop=w // 4, n_mels=m) for w, m in zip(windows, n_mels, strict=True)
        )

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        return sum(F.l1_loss(m(fake), m(real)) for m in self.mels) / len(self.mels)


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1 at several resolutions (Parallel WaveGAN, Yamamoto et al. 2020).

    Args:
        fft_sizes: FFT sizes (window = FFT size, hop = size / 4).
    """

    def __init__(self, fft_sizes: Sequence[int] = (256, 512, 1024)) -> None:
        super().__init__()
        self.fft_sizes = list(fft_sizes)
        for n in self.fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n), persistent=False)

    def forward(self, fake: Tensor, real: Tensor) -> Tensor:
        total = fake.new_zeros((), dtype=torch.float32)
        for n in self.fft_sizes:
            window = getattr(self, f"window_{n}")
            f_mag = stft_magnitude(fake, n, n // 4, window).clamp_min(1e-7)
            r_mag = stft_magnitude(real, n, n // 4, window).clamp_min(1e-7)
            sc = torch.linalg.norm(r_mag - f_mag) / torch.linalg.norm(r_mag).clamp_min(1e-7)
            total = total + sc + F.l1_loss(f_mag.log(), r_mag.log())
        return total / len(self.fft_sizes)
