"""Reconstruction losses over waveforms ``(B, 1, T)``: L1, multi-resolution STFT, multi-scale log-mel; and the
anti-wrapping phase losses over an iSTFT decoder's phase."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..features import MelSpectrogram, stft_magnitude


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
            raise UserError(f"windows and n_mels must have the same length, got {list(windows)} and {list(n_mels)}")
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


def anti_wrap(x: Tensor) -> Tensor:
    """``|x|`` after wrapping ``x`` into ``[-pi, pi]``: the distance between two angles that differ by ``x``."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def phase_loss(pred: Tensor, target: Tensor) -> Tensor:
    """APNet's phase losses (Ai and Ling 2023): the anti-wrapped errors of the instantaneous phase, of
    its difference along frequency (group delay) and of its difference along time (instantaneous angular
    frequency), summed; each a mean over bins and frames.

    Args:
        pred, target: phases ``(B, K, T)`` in radians over the same frames (``K`` bins).
    """
    if pred.shape != target.shape:
        raise ValueError(f"phase shapes differ: {tuple(pred.shape)} and {tuple(target.shape)}")
    instantaneous = anti_wrap(pred - target).mean()
    group_delay = anti_wrap(torch.diff(pred, dim=1) - torch.diff(target, dim=1)).mean()
    angular_frequency = anti_wrap(torch.diff(pred, dim=2) - torch.diff(target, dim=2)).mean()
    return instantaneous + group_delay + angular_frequency
