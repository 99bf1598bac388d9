"""Vector quantizer with a learned codebook (VQ-VAE, van den Oord et al. 2017)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .base import Quantizer, QuantizerOutput, lookup_any_shape
from .ops import (
    all_reduce_sum,
    broadcast_from_rank0,
    code_counts,
    from_rows,
    kmeans,
    nearest_code,
    sample_rows,
    to_rows,
    usage_metrics,
)

DISTANCES = ("l2", "cosine")
# Decay of the running code-use counts that decide which codes are dead (EnCodec's EMA decay).
USAGE_DECAY = 0.99


def straight_through(x: Tensor, q: Tensor) -> Tensor:
    """Value exactly ``q``, gradient w.r.t. ``x`` the identity (VQ-VAE sec. 3.1 straight-through).

    ``x - x.detach()`` is exactly zero, so unlike ``x + (q - x).detach()`` the value is bit-identical
    to ``q`` and ``decode(indices)`` reproduces ``quantized`` exactly.
    """
    return q.detach() + (x - x.detach())


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """Distances in float32 under bf16/fp16 autocast, in float64 for a float64 model."""
    return torch.promote_types(dtype, torch.float32)


class VectorQuantizer(Quantizer):
    """Nearest-neighbour vector quantizer with a learned codebook and straight-through gradients.

    loss = ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2 (VQ-VAE eq. 3).

    Args:
        dim: channels D of the input latents ``(B, D, T)``.
        codebook_size: number of codes K.
        beta: commitment weight.
        distance: ``"l2"`` or ``"cosine"`` (cosine: inputs and codes l2-normalised, ViT-VQGAN sec. 3.2).
        codebook_dim: look codes up in a lower dimension through linear projections
            (factorized codes, ViT-VQGAN sec. 3.2); ``None`` means ``dim``.
        kmeans_init: initialise the codebook by k-means on the first training batch.
        dead_code_threshold: in training, codes whose running use count per batch falls below this
            are replaced by random vectors of the current batch (Jukebox sec. 3.3 / EnCodec); 0 disables.
        kmeans_iters: Lloyd iterations for ``kmeans_init``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        distance: str = "l2",
        codebook_dim: int | None = None,
        kmeans_init: bool = False,
        dead_code_threshold: float = 0.0,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise UserError(f"dim must be >= 1, got {dim}")
        if codebook_size < 2:
            raise UserError(f"codebook_size must be >= 2, got {codebook_size}")
        if distance not in DISTANCES:
            raise UserError(f"distance must be one of {DISTANCES}, got {distance!r}")
        if beta < 0:
            raise UserError(f"beta must be >= 0, got {beta}")
        if dead_code_threshold < 0:
            raise UserError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        codebook_dim = dim if codebook_dim is None else codebook_dim
        if codebook_dim < 1:
            raise UserError(f"codebook_dim must be >= 1, got {codebook_dim}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.codebook_dim = codebook_dim
        self.beta = beta
        self.distance = distance
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = dead_code_threshold
        self.project_in = nn.Linear(dim, codebook_dim) if codebook_dim != dim else nn.Identity()
        self.project_out = nn.Linear(codebook_dim, dim) if codebook_dim != dim else nn.Identity()
        self._init_codebook_storage()
        # "Already initialised" is state: a resumed model must not re-run k-means.
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("cluster_size", torch.ones(codebook_size))

    def _init_codebook_storage(self) -> None:
        self.codebook = nn.Parameter(torch.randn(self.codebook_size, self.codebook_dim))

    @property
    def cosine(self) -> bool:
        return self.distance == "cosine"

    def codes(self) -> Tensor:
        """(K, codebook_dim) codes as used for lookup (unit-norm under cosine distance)."""
        return F.normalize(self.codebook, dim=1) if self.cosine else self.codebook

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` of shape ``(B, D, T)``; in training mode also update codebook state."""
        self.check_latents(z)
        batch, _, frames = z.shape
        with torch.autocast(z.device.type, enabled=False):
            x = self.project_in(to_rows(z).to(_at_least_float32(z.dtype)))  # (B*T, Dc)
            if self.training and not bool(self.initted):
                self._kmeans_init(x.detach())
            if self.cosine:
                x = F.normalize(x, dim=1)
            codes = self.codes()
            indices = nearest_code(x.detach(), codes.detach(), cosine=self.cosine)
            q = F.embedding(indices, codes)
            commitment = F.mse_loss(x, q.detach())
            codebook_loss = self._codebook_loss(x, q)
            counts = code_counts(indices, self.codebook_size)
            metrics = usage_metrics(counts)
            if self.training:
                self._update(x.detach(), indices, counts)
            out = self.project_out(straight_through(x, q))
        return QuantizerOutput(
            quantized=from_rows(out, batch, frames),
            indices=indices.view(batch, frames),
            loss=codebook_loss + self.beta * commitment,
            metrics=metrics,
            commitment=commitment,
            codebook=codebook_loss,
        )

    def _codebook_loss(self, x: Tensor, q: Tensor) -> Tensor:
        return F.mse_loss(q, x.detach())

    @torch.no_grad()
    def _kmeans_init(self, x: Tensor) -> None:
        centroids, counts = kmeans(x, self.codebook_size, self.kmeans_iters, cosine=self.cosine)
        self._set_codes(torch.arange(self.codebook_size, device=x.device), centroids, counts)
        self.initted.fill_(True)

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor, counts: Tensor) -> None:
        self.codebook.data[which] = vectors.to(self.codebook.dtype)
        self.cluster_size[which] = counts

    @torch.no_grad()
    def _update(self, x: Tensor, indices: Tensor, counts: Tensor) -> None:
        """Training-time state update: running code counts and dead-code restart."""
        if self.dead_code_threshold <= 0:
            return
        global_counts = all_reduce_sum(counts.clone())
        self.cluster_size.mul_(USAGE_DECAY).add_(global_counts, alpha=1 - USAGE_DECAY)
        self._restart_dead_codes(x)

    @torch.no_grad()
    def _restart_dead_codes(self, x: Tensor) -> None:
        """Replace codes used less than ``dead_code_threshold`` by random current-batch vectors."""
        dead = (self.cluster_size < self.dead_code_threshold).nonzero().squeeze(1)
        if dead.numel() == 0:
            return
        new = broadcast_from_rank0(sample_rows(x, dead.numel()).contiguous())
        # A revived code starts at the threshold: it survives iff it keeps catching that many vectors.
        fill = torch.full((dead.numel(),), max(self.dead_code_threshold, 1.0), device=x.device)
        self._set_codes(dead, new, fill)

    def encode(self, z: Tensor) -> Tensor:
        """(B, D, T) -> (B, T) int64 indices of the nearest codes."""
        self.check_latents(z)
        batch, _, frames = z.shape
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            x = self.project_in(to_rows(z).to(_at_least_float32(z.dtype)))
            if self.cosine:
                x = F.normalize(x, dim=1)
            return nearest_code(x, self.codes(), cosine=self.cosine).view(batch, frames)

    def decode(self, indices: Tensor) -> Tensor:
        """(..., T) int64 -> (..., D, T) quantized latents; e.g. (B, T) -> (B, D, T), (N,) -> (D, N)."""
        self.check_indices(indices)
        return lookup_any_shape(indices, self._decode)

    def _decode(self, indices: Tensor) -> Tensor:
        batch, frames = indices.shape
        with torch.autocast(indices.device.type, enabled=False):
            q = F.embedding(indices.reshape(-1), self.codes())
            return from_rows(self.project_out(q), batch, frames)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, codebook_dim={self.codebook_dim}, "
            f"beta={self.beta}, distance={self.distance!r}, kmeans_init={self.kmeans_init}, "
            f"dead_code_threshold={self.dead_code_threshold}"
        )
