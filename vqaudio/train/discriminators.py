"""Discriminators and adversarial losses for codec training.

* Multi-period discriminator (HiFi-GAN, Kong et al. 2020, sec. 2.2): the waveform folded into
  ``(T / p, p)`` for periods 2, 3, 5, 7, 11, 2-D convs along time.
* Multi-scale STFT discriminator (EnCodec, Defossez et al. 2022, sec. 3.4): 2-D convs over the complex
  STFT (real and imaginary as channels) at several window sizes.
Each sub-discriminator returns its logits and its intermediate feature maps (for feature matching).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

Features = list[Tensor]


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, channels: Sequence[int] = (16, 64, 256, 512)) -> None:
        super().__init__()
        self.period = period
        layers, cin = [], 1
        for i, cout in enumerate(channels):
            stride = (3, 1) if i < len(channels) - 1 else (1, 1)
            layers.append(weight_norm(nn.Conv2d(cin, cout, (5, 1), stride, padding=(2, 0))))
            cin = cout
        self.convs = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(cin, 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: Tensor) -> tuple[Tensor, Features]:
        b, c, t = wav.shape
        pad = (-t) % self.period
        x = F.pad(wav, (0, pad), mode="reflect" if pad < t else "constant")
        x = x.view(b, c, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
            feats.append(x)
        x = self.out(x)
        feats.append(x)
        return x.flatten(1), feats


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11), channels: Sequence[int] = (16, 64, 256, 512)):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels) for p in periods)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, Features]]:
        return [d(wav) for d in self.discriminators]


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int = 32, dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for d in dilations:
            convs.append(
                weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
            )
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: Tensor) -> tuple[Tensor, Features]:
        with torch.autocast(wav.device.type, enabled=False):
            spec = torch.stft(wav.float().squeeze(1), self.n_fft, self.hop, window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, frames, freq)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        x = self.out(x)
        feats.append(x)
        return x.flatten(1), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, n_ffts: Sequence[int] = (1024, 512, 256, 128), channels: int = 32) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in n_ffts)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, Features]]:
        return [d(wav) for d in self.discriminators]


class Discriminators(nn.Module):
    """All discriminators together; ``forward`` returns every sub-discriminator's (logits, features)."""

    def __init__(
        self,
        periods: Sequence[int] = (2, 3, 5, 7, 11),
        period_channels: Sequence[int] = (16, 64, 256, 512),
        n_ffts: Sequence[int] = (1024, 512, 256, 128),
        stft_channels: int = 32,
    ) -> None:
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, period_channels)
        self.mstftd = MultiScaleSTFTDiscriminator(n_ffts, stft_channels)

    def forward(self, wav: Tensor) -> list[tuple[Tensor, Features]]:
        return self.mpd(wav) + self.mstftd(wav)


def discriminator_loss(real: list[tuple[Tensor, Features]], fake: list[tuple[Tensor, Features]]) -> Tensor:
    """Hinge loss: mean over sub-discriminators of relu(1 - D(x)) + relu(1 + D(x_hat)) (EnCodec eq. 2)."""
    total = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True))
    return total / len(real)


def generator_adversarial_loss(fake: list[tuple[Tensor, Features]]) -> Tensor:
    """Hinge generator loss: mean over sub-discriminators of relu(1 - D(x_hat)) (EnCodec eq. 1)."""
    return sum(F.relu(1 - f).mean() for f, _ in fake) / len(fake)


def feature_matching_loss(real: list[tuple[Tensor, Features]], fake: list[tuple[Tensor, Features]]) -> Tensor:
    """Mean relative L1 between real and fake feature maps, |D_l(x) - D_l(x_hat)| / mean|D_l(x)| (EnCodec eq. 1)."""
    terms = []
    for (_, real_feats), (_, fake_feats) in zip(real, fake, strict=True):
        for r, f in zip(real_feats, fake_feats, strict=True):
            r = r.detach()
            terms.append(F.l1_loss(f, r) / r.abs().mean().clamp_min(1e-6))
    return torch.stack(terms).mean()
