"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Quantizer, QuantizerOutput, lookup_any_shape
from .ops import PointwiseLinear, code_counts, usage_metrics
from .vq import straight_through

# Keeps tanh's image strictly inside the outermost rounding cell (FSQ reference code, appendix A.1).
_BOUND_EPS = 1e-3


class FSQ(Quantizer):
    """Round each of ``len(levels)`` bounded channels to ``levels[i]`` values; codebook implicit.

    Per channel with L levels: ``z -> tanh(z + shift) * half_l - offset`` (offset 0.5 for even L),
    round with a straight-through gradient, divide by ``L // 2`` so codes lie on a grid in [-1, 1].
    The implicit codebook has ``prod(levels)`` entries; ``codes_to_indices`` and ``indices_to_codes``
    are exact inverses on it. Bounding, rounding and index arithmetic run in float32 / int64 even under
    bf16 autocast (bf16 cannot hold integers above 256). No loss, no codebook state.

    Args:
        levels: levels per channel, each >= 2; e.g. [8, 5, 5, 5] for 2**10 codes.
        dim: channels D of the input latents; when ``dim != len(levels)``, linear projections map
            ``D -> len(levels)`` and back. ``None`` means ``len(levels)``.
    """

    def __init__(self, levels: Sequence[int], dim: int | None = None) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise UserError(f"levels must be a non-empty list of integers >= 2, got {levels}")
        self.levels = levels
        self.codebook_size = math.prod(levels)
        if self.codebook_size >= 2**62:
            raise UserError(f"prod(levels) = {self.codebook_size} does not fit int64 indices")
        self.dim = len(levels) if dim is None else int(dim)
        if self.dim < 1:
            raise UserError(f"dim must be >= 1, got {dim}")
        n = len(levels)
        self.project_in = PointwiseLinear(self.dim, n) if self.dim != n else nn.Identity()
        self.project_out = PointwiseLinear(n, self.dim) if self.dim != n else nn.Identity()
        # Per-channel constants shaped (C, 1) to broadcast over (B, C, T); rebuilt from `levels`,
        # so kept out of the state_dict.
        lv = torch.tensor(levels, dtype=torch.float64)[:, None]
        half_l = (lv - 1) * (1 + _BOUND_EPS) / 2
        offset = torch.where(lv % 2 == 0, 0.5, 0.0)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)[:, None]
        for name, value in {
            "_half_l": half_l,
            "_offset": offset,
            "_shift": torch.atanh(offset / half_l),
            "_half_width": torch.div(lv, 2, rounding_mode="floor"),
            "_levels": lv,
        }.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    def bound(self, z: Tensor) -> Tensor:
        """(B, C, T) float32 -> values in the open interval that each channel rounds into its L levels."""
        return torch.tanh(z + self._shift) * self._half_l - self._offset

    def _quantize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, T) float32 -> normalised codes (straight-through) and (B, T) int64 indices."""
        bounded = self.bound(x)
        rounded = bounded.round()
        if bounded.requires_grad:
            rounded = straight_through(bounded, rounded)
        return rounded / self._half_width, self._indices(rounded.detach())

    def _indices(self, rounded: Tensor) -> Tensor:
        """(B, C, T) rounded integer-valued floats -> (B, T) int64, one channel at a time (no (B, C, T) int64)."""
        indices = torch.zeros(rounded.shape[0], rounded.shape[2], dtype=torch.long, device=rounded.device)
        for c, (hw, base) in enumerate(zip(self._half_width[:, 0].tolist(), self._basis[:, 0].tolist(), strict=True)):
            indices += (rounded[:, c] + hw).long() * base
        return indices

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., C, T) normalised codes on the grid -> (..., T) int64 indices."""
        if codes.ndim < 2 or codes.shape[-2] != len(self.levels):
            raise ValueError(f"expected codes of shape (..., {len(self.levels)}, T), got {tuple(codes.shape)}")
        lead, c, frames = codes.shape[:-2], codes.shape[-2], codes.shape[-1]
        flat = codes.reshape(-1, c, frames)
        return self._indices(torch.round(flat.float() * self._half_width)).reshape(*lead, frames)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(..., T) int64 indices -> (..., C, T) float32 normalised codes; e.g. (N,) -> (C, N)."""
        self.check_indices(indices)
        return lookup_any_shape(indices, self._digits_to_codes)

    def _digits_to_codes(self, indices: Tensor) -> Tensor:
        digits = torch.remainder(
            torch.div(indices.long()[:, None, :], self._basis, rounding_mode="floor"), self._levels.long()
        )
        return (digits.float() - self._half_width) / self._half_width

    def _project(self, z: Tensor) -> Tensor:
        """Checked projection: NaN/Inf in ``z`` propagate to every projected channel of their frame
        (IEEE NaN * 0 = NaN), so the small projected tensor is what is checked."""
        self.check_latents(z, finite=False)
        x = self.project_in(z.float())
        self.check_finite(x, z)
        return x

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` of shape ``(B, D, T)``."""
        with torch.autocast(z.device.type, enabled=False):
            codes, indices = self._quantize(self._project(z))
            out = self.project_out(codes)
            metrics = usage_metrics(code_counts(indices, self.codebook_size))
        zero = out.new_zeros(())
        return QuantizerOutput(
            quantized=out, indices=indices, loss=zero, metrics=metrics, commitment=zero, codebook=zero
        )

    def encode(self, z: Tensor) -> Tensor:
        """(B, D, T) -> (B, T) int64 indices."""
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            return self._quantize(self._project(z))[1]

    def decode(self, indices: Tensor) -> Tensor:
        """(..., T) int64 -> (..., D, T)."""
        self.check_indices(indices)
        with torch.autocast(indices.device.type, enabled=False):
            return lookup_any_shape(indices, lambda idx: self.project_out(self._digits_to_codes(idx)))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, dim={self.dim}, codebook_size={self.codebook_size}"
