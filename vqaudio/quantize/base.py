"""The quantizer protocol shared by every quantizer in :mod:`vqaudio.quantize`.

Every quantizer maps latents ``(B, D, T)`` to codes and back:

* ``forward(z) -> QuantizerOutput`` for training (straight-through gradients, losses, metrics),
* ``encode(z) -> indices`` (``(B, T)`` int64, or ``(B, Q, T)`` for a residual stack of depth ``Q``),
* ``decode(indices) -> z_q``: indices of any leading shape ``(..., T)`` (``(..., q, T)`` for a residual
  stack) -> ``(..., D, T)``, so a flat ``(N,)`` list of codes gives their ``(D, N)`` vectors,

and exposes ``dim``, ``codebook_size``, ``n_q`` (residual depth, 1 for a single quantizer) and
``bits_per_frame``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What a quantizer's ``forward`` returns.

    Attributes:
        quantized: ``(B, D, T)`` quantized latents carrying straight-through gradients.
        indices: ``(B, T)`` int64 code indices, ``(B, Q, T)`` for a residual stack.
        loss: the weighted sum the trainer adds to its objective (``codebook + beta * commitment``).
        metrics: detached scalars for logging, at least ``perplexity`` and ``usage``.
        commitment: ``||z_e - sg[e]||^2``, unweighted (moves the encoder side only).
        codebook: ``||sg[z_e] - e||^2`` (moves the codebook only); zero for EMA and FSQ.
        first: ``(B, D, T)`` the first level's quantized latents (straight-through), what a content objective
            on level 0 reads; ``quantized`` itself for a single quantizer.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)
    commitment: Tensor | None = None
    codebook: Tensor | None = None
    first: Tensor | None = None

    def __post_init__(self) -> None:
        if self.first is None:
            self.first = self.quantized


class Quantizer(nn.Module):
    """Base class: input validation and the attributes every quantizer has.

    Subclasses set ``dim``, ``codebook_size`` and implement ``forward``, ``encode`` and ``decode``.
    """

    dim: int
    codebook_size: int

    @property
    def n_q(self) -> int:
        """Residual depth: the number of code indices per frame."""
        return 1

    @property
    def bits_per_frame(self) -> float:
        return self.n_q * math.log2(self.codebook_size)

    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, indices: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def first_level(self, z: Tensor) -> Tensor:
        """``(B, D, T)`` -> the first level's quantized latents with straight-through gradients, as in
        training, but without any state update (EMA, k-means init, dead codes): run in eval mode."""
        training = self.training
        self.eval()
        try:
            return self(z).first
        finally:
            self.train(training)

    def check_latents(self, z: Tensor, finite: bool = True) -> None:
        """Raise ``ValueError`` unless ``z`` is a finite ``(B, dim, T)`` floating tensor.

        ``finite=False`` checks shape and dtype only, for callers that check a smaller tensor derived
        from ``z`` through which any NaN/Inf propagates, and call :meth:`check_finite` on ``z`` if it is not.
        """
        if not isinstance(z, Tensor):
            raise ValueError(f"expected a torch.Tensor of shape (B, {self.dim}, T), got {type(z).__name__}")
        if z.ndim != 3:
            raise ValueError(
                f"expected latents of shape (B, {self.dim}, T) with 3 dims, got {z.ndim} dims: {tuple(z.shape)}"
            )
        if z.shape[1] != self.dim:
            raise ValueError(
                f"expected {self.dim} channels in latents (B, {self.dim}, T), got {z.shape[1]}: {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise ValueError(f"expected floating-point latents, got dtype {z.dtype}")
        if finite:
            self.check_finite(z, z)

    @staticmethod
    def check_finite(probe: Tensor, z: Tensor) -> None:
        """Raise ``ValueError`` if ``z`` holds NaN/Inf, looking at ``probe`` first (``z`` itself, or a
        tensor computed from it through which NaN/Inf propagate).

        One reduction instead of an elementwise mask: NaN/Inf propagate through the sum; only when the sum
        is not finite (a NaN/Inf, or finite values that overflow it) is ``z``'s full mask computed.
        """
        if not bool(torch.isfinite(probe.detach().sum(dtype=torch.float32))):
            bad = int((~torch.isfinite(z)).sum())
            if bad:
                raise ValueError(f"latents contain {bad} NaN/Inf value(s) (shape {tuple(z.shape)})")

    def check_indices(self, indices: Tensor, min_ndim: int = 1) -> None:
        """Raise ``ValueError`` unless ``indices`` is an integer tensor of rank >= ``min_ndim`` within the codebook."""
        shape = "(..., T)" if min_ndim == 1 else "(..., Q, T)"
        if not isinstance(indices, Tensor):
            raise ValueError(f"expected an integer torch.Tensor of shape {shape}, got {type(indices).__name__}")
        if indices.ndim < min_ndim:
            raise ValueError(f"expected indices of shape {shape}, got {indices.ndim} dims: {tuple(indices.shape)}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"expected integer indices, got dtype {indices.dtype}")
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.codebook_size:
                raise ValueError(
                    f"indices must lie in [0, {self.codebook_size - 1}] (codebook_size={self.codebook_size}), "
                    f"got values in [{lo}, {hi}]"
                )


def lookup_any_shape(indices: Tensor, lookup) -> Tensor:
    """``lookup`` of ``(B, T)`` indices -> ``(B, D, T)``, applied to indices of any leading shape ``(..., T)``
    -> ``(..., D, T)``."""
    lead, frames = indices.shape[:-1], indices.shape[-1]
    out = lookup(indices.reshape(-1, frames))
    return out.reshape(*lead, out.shape[1], frames)
