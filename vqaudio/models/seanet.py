"""SEANet-style 1-D convolutional encoder and decoder over raw waveforms (as in SoundStream/EnCodec/DAC).

Encoder: conv -> [residual units (dilations 1, 3, 9) -> strided conv] per stride -> conv to the latent dim.
Decoder: the mirror, with transposed convs. With ``causal=True`` every conv pads on the left only and
every transposed conv trims on the right only, so frame ``i`` of the encoder sees samples
``< (i + 1) * hop`` and decoder output sample ``t`` sees frames ``<= t // hop``.

Two ways to run the same layers: ``forward`` (layer by layer, for training, autograd and GPUs) and
``infer`` (inference: on CPU, each layer's own time-major form in windows of fixed lengths, see
:mod:`vqaudio.models.layers` and :mod:`vqaudio.models.windows`; elsewhere ``forward`` without autograd).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from .layers import (
    PaddedConv1d,
    PaddedConvTranspose1d,
    ResidualUnit,
    TimeMajor,
    describe_missing_fast_path,
    make_activation,
    receptive_field,
)
from .windows import context_frames, forward_windows

log = logging.getLogger(__name__)


def _check_strides(strides: Sequence[int]) -> list[int]:
    strides = [int(s) for s in strides]
    if not strides or any(s < 1 for s in strides):
        raise UserError(f"strides must be a non-empty list of integers >= 1, got {strides}")
    return strides


class _Stack(nn.Module):
    """A Sequential ``net`` of layers with a CPU fast path when every layer has one.

    Whether :meth:`infer` takes the fast path follows the module tree as it is at each call: a layer without
    a trustworthy time-major form (:func:`~vqaudio.models.layers.has_fast_path`), a submodule of a type the
    layers' time-major forms do not read (a wrapper put around a conv after construction, as LoRA/PEFT,
    pruning or quantization tools do), or a forward hook anywhere (the time-major forms do not run hooks)
    makes ``infer`` run the layers' ``forward``, said once per module tree in the log: never a crash and
    never a different result. The decision is cached on the tree's structure (every submodule's name and
    type, and its hooks), so the check costs a walk of the tree per call.
    """

    net: nn.Sequential
    frame_rows: int  # input rows per output frame of the window grid
    in_channels: int

    def use_fast_path(self, enabled: bool = True) -> bool:
        """Let :meth:`infer` use the time-major CPU path (when every layer has one); returns whether it will."""
        self.fast_path_enabled = enabled
        return self._fast_path()

    @property
    def fast_path(self) -> bool:
        """Whether :meth:`infer` takes the time-major CPU path for the module tree as it is now."""
        return self._fast_path()

    def _structure(self) -> tuple:
        return tuple(
            (name, type(m), bool(m._forward_hooks or m._forward_pre_hooks)) for name, m in self.net.named_modules()
        )

    def frame_context(self) -> tuple[int, int] | None:
        """Frames of the chunk grid left and right of a frame that its output depends on
        (:func:`~vqaudio.models.windows.context_frames`), or ``None`` where a layer's reach is not known (a
        layer without a trustworthy time-major form, a foreign wrapper)."""
        if describe_missing_fast_path(self.net) is not None or _foreign_part(self.net) is not None:
            return None
        return context_frames(self.net, self.frame_rows)

    def _fast_path(self) -> bool:
        if not getattr(self, "fast_path_enabled", True):
            return False
        structure = self._structure()
        cached = self.__dict__.get("_fast_path_decision")
        if cached is not None and cached[0] == structure:
            return cached[1]
        missing = describe_missing_fast_path(self.net)
        if missing is None:
            missing = _foreign_part(self.net)
        if missing is not None:
            log.info(
                "%s: %s has no time-major inference; CPU inference runs layer by layer", type(self).__name__, missing
            )
        self.__dict__["_fast_path_decision"] = (structure, missing is None)
        return missing is None

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[1] != self.in_channels:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: expected (B, {self.in_channels}, T), got {shape}")
        if x.shape[-1] == 0 or x.shape[-1] % self.frame_rows:
            raise ValueError(
                f"{type(self).__name__}: length {x.shape[-1]} must be a positive multiple of {self.frame_rows}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.net(x)

    def init_state(self, batch: int) -> list:
        """The stream state before any input, for a causal stack (see :mod:`vqaudio.models.streaming`)."""
        from .streaming import init_state

        return init_state(self.net, batch)

    def step(self, x: Tensor, states: list) -> tuple[Tensor, list]:
        """One chunk ``(B, C, k * frame_rows)`` -> its output and the new state (``states`` unchanged): an
        encoder's ``(B, D, k)`` latents, a decoder's ``(B, 1, k * hop)`` waveform."""
        from .streaming import step

        return step(self.net, x, states)

    def infer(self, x: Tensor) -> Tensor:
        """``forward(x)`` without autograd; on CPU in float32/64, each layer's time-major form in windows."""
        self._check(x)
        if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and self._fast_path():
            return forward_windows(self.net, x, self.frame_rows)
        with torch.no_grad():
            return self.net(x)


# The submodule types the time-major forms read directly (their weights, never their forward): the convs,
# and weight norm's parametrization containers (torch.nn.utils.parametrize).
_READ_TYPES = (nn.Conv1d, nn.ConvTranspose1d, nn.Sequential, nn.ModuleDict, nn.ModuleList)


def _foreign_part(net: nn.Module) -> str | None:
    """The first submodule of ``net`` that the time-major forms would bypass, as text: one with a forward
    hook, or one of a type they do not read; ``None`` if there is none."""
    from torch.nn.utils import parametrize

    for name, m in net.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            return f"{name or 'the stack'} ({type(m).__name__}, with a forward hook)"
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            if type(m).forward in (nn.Conv1d.forward, nn.ConvTranspose1d.forward):
                continue
        elif isinstance(m, (TimeMajor, *_READ_TYPES, parametrize.ParametrizationList)) or _is_weight_norm(m):
            continue
        return f"{name} ({type(m).__name__})"
    return None


def _is_weight_norm(m: nn.Module) -> bool:
    return type(m).__name__ == "_WeightNorm" and type(m).__module__.startswith("torch.nn.utils")


class Encoder(_Stack):
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
        max_channels: cap on the width.
        residual_out_kernel: kernel of the residual units' second conv (1 in SEANet).
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
        residual_out_kernel: int = 1,
    ) -> None:
        super().__init__()
        strides = _check_strides(strides)
        self.hop_length = self.frame_rows = math.prod(strides)
        self.in_channels = 1
        kw = dict(causal=causal, weight_norm=weight_norm)
        layers: list[nn.Module] = [PaddedConv1d(1, channels, kernel, **kw)]
        ch = channels
        for s in strides:
            layers += [
                ResidualUnit(ch, d, residual_kernel, activation, out_kernel=residual_out_kernel, **kw)
                for d in dilations
            ]
            out = min(2 * ch, max_channels)
            layers += [make_activation(activation, ch, inplace=True), PaddedConv1d(ch, out, 2 * s, stride=s, **kw)]
            ch = out
        layers += [make_activation(activation, ch, inplace=True), PaddedConv1d(ch, latent_dim, 3, **kw)]
        self.net = nn.Sequential(*layers)
        self.use_fast_path(True)

    @property
    def receptive_field(self) -> int:
        """Input samples that can influence one output frame (sum over convs of (k - 1) * d * input hop)."""
        return receptive_field(self)


class Decoder(_Stack):
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
        residual_out_kernel: int = 1,
    ) -> None:
        super().__init__()
        strides = _check_strides(strides)
        self.hop_length = math.prod(strides)
        self.frame_rows, self.in_channels = 1, latent_dim
        kw = dict(causal=causal, weight_norm=weight_norm)
        widths = [channels]
        for _ in strides:
            widths.append(min(2 * widths[-1], max_channels))
        layers: list[nn.Module] = [PaddedConv1d(latent_dim, widths[-1], kernel, **kw)]
        for i, s in enumerate(reversed(strides)):
            cin, cout = widths[-1 - i], widths[-2 - i]
            layers += [make_activation(activation, cin, inplace=True), PaddedConvTranspose1d(cin, cout, s, **kw)]
            layers += [
                ResidualUnit(cout, d, residual_kernel, activation, out_kernel=residual_out_kernel, **kw)
                for d in dilations
            ]
        layers += [make_activation(activation, channels, inplace=True), PaddedConv1d(channels, 1, kernel, **kw)]
        self.net = nn.Sequential(*layers)
        self.use_fast_path(True)
