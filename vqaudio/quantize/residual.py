"""Residual stacking of any quantizers (SoundStream sec. 3.3, Zeghidour et al. 2021)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import Quantizer, QuantizerOutput


class ResidualQuantizer(Quantizer):
    """Q quantizers applied in turn, each to what the previous ones left unexplained.

    Stage ``i`` quantizes ``r_i = r_{i-1} - quantized_{i-1}``, ``r_0 = z``; the output is the sum of the
    stages' outputs. Because each stage's output carries a straight-through gradient, ``r_i`` for i > 0
    has no gradient to ``z`` and the sum passes the upstream gradient to ``z`` exactly once, while every
    stage's own parameters (codebook through its loss, projections through the output) still learn.

    With ``dropout=True``, a training example keeps a random number of stages, uniform in [1, Q]
    (SoundStream's quantizer dropout), so one model serves every bitrate from 1 to Q stages. Only a
    ``dropout_fraction`` of the examples are dropped so; the others keep all Q stages (DAC's
    ``quantizer_dropout`` probability, 0.5 there; 1.0 is SoundStream's every example).
    All stages still run and see their residuals, so every parameter is used on every rank (DDP-safe).

    With ``normalize_first=True`` the first stage quantizes the latents normalised per channel over time
    (instance norm, no affine: speaker normalisation, as van Niekerk et al. 2021 do for soft speech units),
    and the residual of the first stage is taken from the unnormalised latents, so level 0 loses the
    per-utterance mean and scale (much of the speaker) while the later levels keep them for the audio.
    The statistics are those of the whole input, padding included.

    Args:
        quantizers: the stages, all with the same ``dim`` and ``codebook_size``.
        dropout: quantizer dropout in training.
        dropout_fraction: the share of training examples that dropout applies to, in [0, 1].
        normalize_first: instance-normalise the first stage's input.
    """

    def __init__(
        self,
        quantizers: Sequence[Quantizer],
        dropout: bool = False,
        normalize_first: bool = False,
        dropout_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout_fraction <= 1.0:
            raise UserError(f"dropout_fraction must lie in [0, 1], got {dropout_fraction}")
        quantizers = list(quantizers)
        if not quantizers:
            raise ValueError("ResidualQuantizer needs at least one quantizer, got an empty list")
        dims = {q.dim for q in quantizers}
        sizes = {q.codebook_size for q in quantizers}
        if len(dims) != 1:
            raise ValueError(f"all stages must share dim, got dims {[q.dim for q in quantizers]}")
        if len(sizes) != 1:
            raise ValueError(f"all stages must share codebook_size, got {[q.codebook_size for q in quantizers]}")
        if any(q.n_q != 1 for q in quantizers):
            raise ValueError("stages must be single-level quantizers (nest stages, not residual stacks)")
        self.stages = nn.ModuleList(quantizers)
        self.dim = quantizers[0].dim
        self.codebook_size = quantizers[0].codebook_size
        self.dropout = dropout
        self.dropout_fraction = dropout_fraction
        self.normalize_first = normalize_first

    def _first_input(self, z: Tensor) -> Tensor:
        """What stage 0 quantizes: ``z`` or, with ``normalize_first``, ``z`` normalised per channel over time."""
        if not self.normalize_first:
            return z
        return (z - z.mean(-1, keepdim=True)) / (z.var(-1, keepdim=True, unbiased=False) + 1e-5).sqrt()

    @classmethod
    def alike(
        cls,
        n_q: int,
        make: Callable[[], Quantizer],
        dropout: bool = False,
        normalize_first: bool = False,
        dropout_fraction: float = 1.0,
    ) -> ResidualQuantizer:
        """A stack of ``n_q`` stages built by calling ``make()`` once per stage.

        Example: ``ResidualQuantizer.alike(8, lambda: VectorQuantizer(128, 1024))``.
        """
        if n_q < 1:
            raise UserError(f"n_q must be >= 1, got {n_q}")
        stages = [make() for _ in range(n_q)]
        return cls(stages, dropout=dropout, normalize_first=normalize_first, dropout_fraction=dropout_fraction)

    @property
    def n_q(self) -> int:
        return len(self.stages)

    def _num_stages(self, n_q: int | None) -> int:
        if n_q is None:
            return len(self.stages)
        if not 1 <= n_q <= len(self.stages):
            raise ValueError(f"n_q must lie in [1, {len(self.stages)}], got {n_q}")
        return n_q

    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize ``z`` ``(B, D, T)`` with the first ``n_q`` stages (all by default).

        Returns ``indices`` of shape ``(B, n_q, T)``; ``loss``, ``commitment`` and ``codebook`` are sums over
        stages; ``metrics`` has the mean ``perplexity``/``usage``, per-stage ``perplexity_q{i}``/``usage_q{i}``
        (stage ``i`` from 0) and ``latent_error_q{q}`` (q from 1), the relative latent error after the first q
        stages over the batch, ``||z - sum of their outputs|| / ||z||`` (all stages counted, dropout or not).
        """
        self.check_latents(z)
        n_q = self._num_stages(n_q)
        keep = None
        if self.training and self.dropout:
            # keep[b] = number of stages example b uses; stage i contributes where i < keep[b].
            keep = torch.randint(1, n_q + 1, (z.shape[0], 1, 1), device=z.device)
            if self.dropout_fraction < 1.0:
                spared = torch.rand(z.shape[0], 1, 1, device=z.device) >= self.dropout_fraction
                keep = torch.where(spared, torch.full_like(keep, n_q), keep)
        residual = z
        quantized = torch.zeros_like(z, dtype=torch.float32)
        indices, metrics = [], {}
        loss = commitment = codebook = z.new_zeros((), dtype=torch.float32)
        first = None
        z_norm = z.detach().float().norm()
        for i, stage in enumerate(self.stages[:n_q]):
            out = stage(self._first_input(residual) if i == 0 else residual)
            first = out.quantized if i == 0 else first
            residual = residual - out.quantized
            contribution = out.quantized if keep is None else out.quantized * (keep > i)
            quantized = quantized + contribution
            indices.append(out.indices)
            loss = loss + out.loss
            commitment = commitment + out.commitment
            codebook = codebook + out.codebook
            for name, value in out.metrics.items():
                metrics[f"{name}_q{i}"] = value
            metrics[f"latent_error_q{i + 1}"] = residual.detach().float().norm() / z_norm
        for name in ("perplexity", "usage"):
            metrics[name] = torch.stack([metrics[f"{name}_q{i}"] for i in range(n_q)]).mean()
        return QuantizerOutput(
            quantized=quantized,
            indices=torch.stack(indices, dim=1),
            loss=loss,
            metrics=metrics,
            commitment=commitment,
            codebook=codebook,
            first=first,
        )

    def first_level(self, z: Tensor) -> Tensor:
        """Stage 0 alone on its input (normalised with ``normalize_first``), without state updates."""
        self.check_latents(z)
        return self.stages[0].first_level(self._first_input(z))

    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """(B, D, T) -> (B, n_q, T) int64 indices."""
        self.check_latents(z)
        n_q = self._num_stages(n_q)
        # frames-major memory, the layout of a stage's decode (B, T, D).transpose: the stages' rows are views and
        # each subtraction one contiguous pass (on (B, D, T) memory it was strided, 10x slower: a quarter of an
        # 8-level search)
        residual, indices = z.transpose(1, 2).contiguous().transpose(1, 2), []
        with torch.no_grad():
            for i, stage in enumerate(self.stages[:n_q]):
                idx = stage.encode(self._first_input(residual) if i == 0 else residual)
                residual = residual - stage.decode(idx)
                indices.append(idx)
        return torch.stack(indices, dim=1)

    def decode(self, indices: Tensor) -> Tensor:
        """(..., q, T) int64 with 1 <= q <= Q -> (..., D, T), the sum of the first q stages' codes."""
        self.check_indices(indices, min_ndim=2)
        self._num_stages(indices.shape[-2])
        out = self.stages[0].decode(indices[..., 0, :])
        for i in range(1, indices.shape[-2]):
            out = out + self.stages[i].decode(indices[..., i, :])
        return out


@torch.no_grad()
def latent_errors(quantizer: Quantizer, z: Tensor, indices: Tensor | None = None) -> Tensor:
    """Relative latent error after each level, per example: ``(B, D, T)`` latents -> ``(B, Q)`` with column
    ``q - 1`` holding ``||z - sum of the first q levels' codes|| / ||z||`` (NaN where ``z`` is all zeros).

    ``quantizer`` is a :class:`ResidualQuantizer` or a single quantizer (Q = 1); ``indices`` ``(B, Q, T)`` are the
    codes to measure, by default those ``encode`` chooses for ``z``.
    """
    residual = isinstance(quantizer, ResidualQuantizer)
    if indices is None:
        indices = quantizer.encode(z) if residual else quantizer.encode(z)[:, None]
    z = z.float()
    norm = z.flatten(1).norm(dim=1)
    partial = torch.zeros_like(z)
    errors = []
    for i in range(indices.shape[1]):
        level = quantizer.stages[i].decode(indices[:, i]) if residual else quantizer.decode(indices[:, i])
        partial = partial + level.float()
        error = (z - partial).flatten(1).norm(dim=1)
        errors.append(torch.where(norm > 0, error / norm, torch.full_like(norm, float("nan"))))
    return torch.stack(errors, dim=1)
