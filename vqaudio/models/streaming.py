"""Streaming through causal encoder/decoder stacks: per-layer state, chunks of any whole number of steps.

Each causal layer keeps what its next chunk needs from the past:

* ``PaddedConv1d``: the last ``(k - 1) * d + 1 - s`` input samples (zeros at the start: exactly the left
  padding the offline pass uses), so a chunk is convolved as ``valid`` over ``[state, chunk]``;
* ``PaddedConvTranspose1d`` (kernel ``2s``, stride ``s``, right-trimmed by ``s`` when causal): the ``s``
  samples of overlap-add tail that the next frame completes (bias excluded, it is added once);
* activations: nothing; ``ResidualUnit``: its block's convs.

Concatenated chunk outputs therefore equal the offline pass to float rounding for every chunking
(tested). The functional core is :func:`init_state` and :func:`step`; the codec builds
``init_stream`` / ``encode_step`` / ``decode_step`` and ``streaming()`` on them (as moshi's Mimi keeps
per-layer streaming state).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import Activation, PaddedConv1d, PaddedConvTranspose1d, ResidualUnit


def _leaves(module: nn.Module):
    """The stateful and stateless layers of a stack, in order, residual units as ``(unit, [block layers])``."""
    for layer in module:
        if isinstance(layer, ResidualUnit):
            yield layer, list(_leaves(layer.block))
        else:
            yield layer, None


def _check_causal(layer: nn.Module) -> None:
    if isinstance(layer, PaddedConv1d):
        k, d, s = layer.conv.kernel_size[0], layer.conv.dilation[0], layer.conv.stride[0]
        if layer.left != (k - 1) * d + 1 - s:
            raise ValueError("streaming needs a causal codec (model.causal: true); this one pads on both sides")
    elif isinstance(layer, PaddedConvTranspose1d):
        if layer.trim[0] != 0:
            raise ValueError("streaming needs a causal codec (model.causal: true); this one pads on both sides")
    elif not isinstance(layer, (Activation, ResidualUnit)):
        raise ValueError(f"streaming has no state rule for {type(layer).__name__}")


def init_state(net: nn.Sequential, batch: int, device=None, dtype=None) -> list:
    """The state of ``net`` before any input: one entry per layer (a tensor, ``None``, or a residual unit's
    list). Raises ``ValueError`` for a non-causal stack."""
    param = next(net.parameters())
    device, dtype = device or param.device, dtype or param.dtype
    states: list = []
    for layer, inner in _leaves(net):
        _check_causal(layer)
        if inner is not None:
            states.append(init_state(layer.block, batch, device, dtype))
        elif isinstance(layer, PaddedConv1d):
            cin = layer.conv.in_channels
            states.append(torch.zeros(batch, cin, layer.left, device=device, dtype=dtype) if layer.left else None)
        elif isinstance(layer, PaddedConvTranspose1d):
            s = layer.conv.stride[0]
            states.append(torch.zeros(batch, layer.conv.out_channels, s, device=device, dtype=dtype))
        else:
            states.append(None)
    return states


def _conv_step(layer: PaddedConv1d, x: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor | None]:
    conv = layer.conv
    full = x if state is None else torch.cat([state, x], dim=-1)
    y = F.conv1d(full, conv.weight, conv.bias, stride=conv.stride[0], dilation=conv.dilation)
    return y, (None if state is None else full[..., full.shape[-1] - layer.left :])


def _transpose_step(layer: PaddedConvTranspose1d, x: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
    conv = layer.conv
    s = conv.stride[0]
    y = F.conv_transpose1d(x, conv.weight, None, stride=s)  # (B, C, (n + 1) * s), no bias yet
    y = torch.cat([y[..., :s] + tail, y[..., s:]], dim=-1)
    out = y[..., : x.shape[-1] * s] + conv.bias[None, :, None]
    return out, y[..., x.shape[-1] * s :]


def step(net: nn.Sequential, x: Tensor, states: list) -> tuple[Tensor, list]:
    """Run one chunk through ``net``; returns the chunk's output and the new state (``states`` is not changed).

    Args:
        x: ``(B, C, n)`` where ``n`` is a whole number of the stack's input steps (hops for an encoder).
    """
    new: list = []
    for (layer, inner), state in zip(_leaves(net), states, strict=True):
        if inner is not None:
            y, s = step(layer.block, x, state)
            x = y + x
        elif isinstance(layer, PaddedConv1d):
            x, s = _conv_step(layer, x, state)
        elif isinstance(layer, PaddedConvTranspose1d):
            x, s = _transpose_step(layer, x, state)
        else:
            x, s = layer(x.clone()), None  # activations may work in place; the caller's chunk stays intact
        new.append(s)
    return x, new
