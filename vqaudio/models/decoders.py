"""The decoder kinds a codec or a unit vocoder can end in, chosen by config (``decoder: seanet | istft``).

Both take latents ``(B, D, T')`` and give a waveform ``(B, 1, T' * hop)``, with ``forward`` (training), ``infer``
(inference without autograd) and ``init_state`` / ``step`` (streaming, causal only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError
from .istft import IstftDecoder
from .seanet import Decoder

DECODER_KINDS = ("seanet", "istft")


def check_decoder_kind(kind: str, where: str) -> None:
    if kind not in DECODER_KINDS:
        raise UserError(f"{where}.decoder must be one of {DECODER_KINDS}, got {kind!r}")


def build_decoder(
    kind: str,
    *,
    strides: Sequence[int],
    latent_dim: int,
    causal: bool,
    seanet: dict,
    istft: dict,
    where: str = "config",
) -> nn.Module:
    """A decoder of ``kind``: a SEANet :class:`Decoder` built with ``seanet`` (its keyword arguments besides the
    strides, latent width and causality), or an :class:`IstftDecoder` at hop ``prod(strides)`` built with
    ``istft`` (``dim``, ``blocks``, ``hidden``, ``kernel``)."""
    check_decoder_kind(kind, where)
    if kind == "seanet":
        return Decoder(strides=strides, latent_dim=latent_dim, causal=causal, **seanet)
    return IstftDecoder(hop_length=math.prod(strides), latent_dim=latent_dim, causal=causal, **istft)


def decode_with_phase(decoder: nn.Module, latents: Tensor) -> tuple[Tensor, Tensor | None]:
    """A training pass through ``decoder``: the waveform and, for an iSTFT decoder, its frames' phase
    ``(B, n_fft / 2 + 1, T')`` (``None`` for SEANet, which has no spectral output)."""
    if isinstance(decoder, IstftDecoder):
        return decoder.forward_with_phase(latents)
    return decoder(latents), None


def istft_options(config) -> dict:
    """The :class:`IstftDecoder` arguments of a codec or vocoder config (its ``decoder_*`` fields)."""
    return dict(
        dim=config.decoder_dim, blocks=config.decoder_blocks, hidden=config.decoder_hidden, kernel=config.decoder_kernel
    )


def convnext_parameters(cin: int, dim: int, blocks: int, hidden: int | None, kernel: int) -> int:
    """The weights of a frame-rate ConvNeXt backbone (biases aside): an embedding conv from ``cin`` channels and
    ``blocks`` blocks (depthwise conv, MLP of width ``hidden``, ``None``: ``3 * dim``), as the iSTFT decoder and
    the mel encoder build it."""
    hidden = 3 * dim if hidden is None else hidden
    return cin * dim * kernel + blocks * (dim * kernel + 2 * dim * hidden)


def istft_parameters(latent_dim: int, dim: int, blocks: int, hidden: int | None, kernel: int, hop: int) -> int:
    """The weights of an :class:`IstftDecoder` (biases aside): embedding conv, blocks, head."""
    return convnext_parameters(latent_dim, dim, blocks, hidden, kernel) + dim * (4 * hop + 2)
