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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from .timemajor import forward_time_major, supports_time_major

ACTIVATIONS = ("elu", "snake", "leaky_relu")

# _ZERO_BIAS: conv biases start at zero (as in DAC's init_weights). With PyTorch's default uniform biases
# the signal shrinks through ~20 convs while every bias adds a constant, so a fresh encoder's latents
# varied over time by 2 % of their size: the decoder learnt to ignore them and the tiny recipe codec
# used 1-2 % of its codes (perplexity ~1.3). With zero biases the same run keeps perplexity 25-70.


class Snake(nn.Module):
    """x + sin^2(alpha x) / alpha with a learned per-channel alpha (Ziyin et al. 2020; used in DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + (self.alpha * x).sin().pow(2) / (self.alpha + 1e-9)


def make_activation(kind: str, channels: int, inplace: bool = False) -> nn.Module:
    """``inplace`` only where the input is used by nothing else (ELU's backward reads its output)."""
    if kind == "elu":
        return nn.ELU(inplace=inplace)
    if kind == "snake":
        return Snake(channels)
    if kind == "leaky_relu":
        return nn.LeakyReLU(0.1, inplace=inplace)  # slope 0.1 as in HiFi-GAN's generator
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


class PaddedConv1d(nn.Module):
    """Conv1d with the padding that keeps ``out_len = in_len / stride`` (for lengths divisible by stride).

    Total padding ``(k - 1) * d + 1 - s``: all on the left when causal, split as in EnCodec otherwise
    (left gets the odd sample). No input copy: the conv pads both sides by the left amount itself and
    the outputs past ``in_len / stride`` (which only the extra right padding produces) are dropped.
    Kernel 1 runs as one batched GEMM (PyTorch's CPU conv takes a slow im2col path for it).
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
        nn.init.zeros_(conv.bias)  # see _ZERO_BIAS
        self.conv = _weight_norm(conv) if weight_norm else conv
        total = (kernel - 1) * dilation + 1 - stride
        self.left = total if causal else total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        stride = conv.stride[0]
        if conv.kernel_size[0] == 1 and stride == 1:
            return torch.baddbmm(conv.bias[None, :, None], conv.weight[:, :, 0].expand(x.shape[0], -1, -1), x)
        y = F.conv1d(x, conv.weight, conv.bias, stride=stride, padding=self.left, dilation=conv.dilation)
        frames = x.shape[-1] // stride
        return y if y.shape[-1] == frames else y[..., :frames]


def conv_transpose_2s(x: Tensor, weight: Tensor, bias: Tensor, stride: int) -> Tensor:
    """``conv_transpose1d(x, weight, bias, stride)`` for kernel ``2 * stride``, as one GEMM and an overlap-add.

    Each input frame j emits ``2s`` samples per output channel; the first ``s`` land at ``j * s``, the
    second ``s`` overlap the next frame's first half. PyTorch's CPU transposed conv takes a col2im path
    several times slower than this.

    Args:
        x: ``(B, C_in, L)``.
        weight: ``(C_in, C_out, 2s)`` as in ``nn.ConvTranspose1d``.

    Returns:
        ``(B, C_out, (L + 1) * s)``.
    """
    b, cin, frames = x.shape
    cout = weight.shape[1]
    cols = torch.matmul(weight.reshape(cin, cout * 2 * stride).t(), x)  # (B, C_out * 2s, L)
    cols = cols.view(b, cout, 2, stride, frames).transpose(-1, -2)  # (B, C_out, 2, L, s)
    out = cols.new_empty(b, cout, frames + 1, stride)
    out[:, :, :frames] = cols[:, :, 0]
    out[:, :, frames] = 0
    out[:, :, 1:] += cols[:, :, 1]
    out += bias[None, :, None, None]
    return out.view(b, cout, (frames + 1) * stride)


class PaddedConvTranspose1d(nn.Module):
    """ConvTranspose1d(kernel 2s, stride s) trimmed so ``out_len = in_len * s`` (right-trim when causal)."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool = False, weight_norm: bool = True) -> None:
        super().__init__()
        conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        nn.init.zeros_(conv.bias)  # see _ZERO_BIAS
        self.conv = _weight_norm(conv) if weight_norm else conv
        self.trim = (0, stride) if causal else (stride - stride // 2, stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = conv_transpose_2s(x, self.conv.weight, self.conv.bias, self.conv.stride[0])
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
            make_activation(act, hidden, inplace=True),
            PaddedConv1d(hidden, channels, 1, causal=causal, weight_norm=weight_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x).add_(x)  # the 1x1 conv's output is not needed by its backward


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
        activation: ``"elu"``, ``"snake"`` or ``"leaky_relu"``.
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
            layers += [make_activation(activation, ch, inplace=True), PaddedConv1d(ch, out, 2 * s, stride=s, **kw)]
            ch = out
        layers += [make_activation(activation, ch, inplace=True), PaddedConv1d(ch, latent_dim, 3, **kw)]
        self.net = nn.Sequential(*layers)

    def forward(self, wav: Tensor) -> Tensor:
        # CPU inference: the same layers time-major, in windows of fixed lengths (timemajor.py).
        if supports_time_major(wav):
            return forward_time_major(self.net, wav, self.hop_length)
        return self.net(wav)

    @property
    def receptive_field(self) -> int:
        """Input samples that can influence one output frame (sum over convs of (k - 1) * d * input hop)."""
        rf, jump = 1, 1
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                rf += (m.kernel_size[0] - 1) * m.dilation[0] * jump
                jump *= m.stride[0]
        return rf


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
            layers += [make_activation(activation, cin, inplace=True), PaddedConvTranspose1d(cin, cout, s, **kw)]
            layers += [ResidualUnit(cout, d, residual_kernel, activation, **kw) for d in dilations]
        layers += [make_activation(activation, channels, inplace=True), PaddedConv1d(channels, 1, kernel, **kw)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: Tensor) -> Tensor:
        # CPU inference: the same layers time-major, in windows of fixed lengths (timemajor.py).
        if supports_time_major(latents):
            return forward_time_major(self.net, latents, 1)
        return self.net(latents)
