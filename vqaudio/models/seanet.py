"""SEANet-style 1-D convolutional encoder and decoder over raw waveforms (as in SoundStream/EnCodec/DAC).

Encoder: conv -> [residual units (dilations 1, 3, 9) -> strided conv] per stride -> conv to the latent dim.
Decoder: the mirror, with transposed convs. With ``causal=True`` every conv pads on the left only and
every transposed conv trims on the right only, so frame ``i`` of the encoder sees samples
``< (i + 1) * hop`` and decoder output sample ``t`` sees frames ``<= t // hop``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

ACTIVATIONS = ("elu", "snake")


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned per-channel alpha (Ziyin et al. 2020; used in DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha * x).sin().pow(2) / (self.alpha + 1e-9)


def make_activation(kind: str, channels: int) -> nn.Module:
    if kind == "elu":
        return nn.ELU()
    if kind == "snake":
        return Snake(channels)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


class PaddedConv1d(nn.Module):
    """Conv1d with the padding that keeps ``out_len = in_len / stride`` (for lengths divisible by stride).

    Total padding ``(k - 1) * d + 1 - s``: all on the left when causal, split as in EnCodec otherwise.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        self.conv = _weight_norm(conv) if weight_norm else conv
        total = (kernel - 1) * dilation + 1 - stride
        self.pad = (total, 0) if causal else (total - total // 2, total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(nn.functional.pad(x, self.pad))


class PaddedConvTranspose1d(nn.Module):
    """ConvTranspose1d(kernel 2s, stride s) trimmed so ``out_len = in_len * s`` (right-trim when causal)."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool = False, weight_norm: bool = True) -> None:
        super().__init__()
        conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        self.conv = _weight_norm(conv) if weight_norm else conv
        self.trim = (0, stride) if causal else (stride - stride // 2, stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]


class ResidualUnit(nn.Module):
    """act -> dilated conv (k=kernel, C -> C/2) -> act -> 1x1 conv (C/2 -> C), plus the input."""

    def __init__(self, channels: int, dilation: int, kernel: int, act: str, causal: bool, weight_norm: bool) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.block = nn.Sequential(
            make_activation(act, channels),
            PaddedConv1d(channels, hidden, kernel, dilation=dilation, causal=causal, weight_norm=weight_norm),
            make_activation(act, hidden),
            PaddedConv1d(hidden, channels, 1, causal=causal, weight_norm=weight_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def _check_strides(strides: Sequence[int]) -> list[int]:
    strides = [int(s) for s in strides]
    if not strides or any(s < 1 for s in strides):
        raise ValueError(f"strides must be a non-empty list of integers >= 1, got {strides}")
    return strides


class Encoder(nn.Module):
    """Waveform ``(B, 1, T)`` with ``T`` divisible by ``hop_length`` -> latents ``(B, latent_dim, T / hop)``.

    Args:
        channels: channels of the first conv; doubled after each strided conv, capped at ``max_channels``.
        strides: downsampling factors in order of application; ``hop_length = prod(strides)``.
        latent_dim: channels D of the latents.
        kernel: kernel of the first and last convs.
        residual_kernel: kernel of the dilated convs in the residual units.
        dilations: dilations of the residual units before each strided conv.
        activation: ``"elu"`` or ``"snake"``.
        causal: pad on the left only (streaming).
        weight_norm: weight normalisation on every conv.
    """

    def __init__(
        self,
        channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 8),
        latent_dim: int = 128,
        kernel: int = 7,
        residual_kernel: int = 3,
        dilations: Sequence[int] = (1, 3, 9),
        activation: str = "elu",
        causal: bool = False,
        weight_norm: bool = True,
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        strides = _check_strides(strides)
        self.hop_length = math.prod(strides)
        kw = dict(causal=causal, weight_norm=weight_norm)
        layers: list[nn.Module] = [PaddedConv1d(1, channels, kernel, **kw)]
        ch = channels
        for s in strides:
            layers += [ResidualUnit(ch, d, residual_kernel, activation, **kw) for d in dilations]
            out = min(2 * ch, max_channels)
            layers += [make_activation(activation, ch), PaddedConv1d(ch, out, 2 * s, stride=s, **kw)]
            ch = out
        layers += [make_activation(activation, ch), PaddedConv1d(ch, latent_dim, 3, **kw)]
        self.net = nn.Sequential(*layers)

    def forward(self, wav: Tensor) -> Tensor:
        return self.net(wav)


class Decoder(nn.Module):
    """Latents ``(B, latent_dim, T')`` -> waveform ``(B, 1, T' * hop)``; the mirror of :class:`Encoder`.

    Args: as :class:`Encoder`; ``strides`` are given in the encoder's order and applied reversed.
    """

    def __init__(
        self,
        channels: int = 32,
        strides: Sequence[int] = (2, 4, 5, 8),
        latent_dim: int = 128,
        kernel: int = 7,
        residual_kernel: int = 3,
        dilations: Sequence[int] = (1, 3, 9),
        activation: str = "elu",
        causal: bool = False,
        weight_norm: bool = True,
        max_channels: int = 512,
    ) -> None:
        super().__init__()
        strides = _check_strides(strides)
        self.hop_length = math.prod(strides)
        kw = dict(causal=causal, weight_norm=weight_norm)
        widths = [channels]
        for _ in strides:
            widths.append(min(2 * widths[-1], max_channels))
        layers: list[nn.Module] = [PaddedConv1d(latent_dim, widths[-1], kernel, **kw)]
        for i, s in enumerate(reversed(strides)):
            cin, cout = widths[-1 - i], widths[-2 - i]
            layers += [make_activation(activation, cin), PaddedConvTranspose1d(cin, cout, s, **kw)]
            layers += [ResidualUnit(cout, d, residual_kernel, activation, **kw) for d in dilations]
        layers += [make_activation(activation, channels), PaddedConv1d(channels, 1, kernel, **kw)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        return self.net(latents)
