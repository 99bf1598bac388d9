"""Vector quantizer whose codebook follows exponential moving averages of its assigned vectors."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError
from .ops import all_reduce_sum
from .vq import VectorQuantizer


class EMAVectorQuantizer(VectorQuantizer):
    """VQ with an EMA codebook (VQ-VAE appendix A.1; VQ-VAE-2 sec. 3.1): no codebook gradient.

    In training mode only, after quantizing a batch with the current codebook::

        N_k <- decay * N_k + (1 - decay) * n_k
        m_k <- decay * m_k + (1 - decay) * sum_{i in k} z_i
        e_k <- m_k / N^_k,   N^_k = (N_k + eps) / (n + K * eps) * n,   n = sum_k N_k

    (Laplace smoothing keeps unused codes finite). ``n_k`` and the sums are all-reduced under
    torch.distributed, so every rank keeps the same codebook. loss = beta * commitment.

    Args:
        dim: channels D of the input latents ``(B, D, T)``.
        codebook_size: number of codes K.
        beta: commitment weight.
        decay: EMA decay gamma in [0, 1).
        eps: Laplace smoothing epsilon (> 0).
        kmeans_init: initialise codes, counts and sums by k-means on the first training batch.
        dead_code_threshold: restart codes whose ``N_k`` falls below this (0 disables); a revived code
            also resets ``N_k`` and ``m_k`` so the next EMA step does not pull it back.
        kmeans_iters: Lloyd iterations for ``kmeans_init``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        kmeans_init: bool = False,
        dead_code_threshold: float = 0.0,
        kmeans_iters: int = 10,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise UserError(f"decay must lie in [0, 1), got {decay}")
        if eps <= 0:
            raise UserError(f"eps must be > 0, got {eps}")
        super().__init__(
            dim,
            codebook_size,
            beta=beta,
            kmeans_init=kmeans_init,
            dead_code_threshold=dead_code_threshold,
            kmeans_iters=kmeans_iters,
        )
        self.decay = decay
        self.eps = eps
        # m_k starts as e_k * N_k with N_k = 1, so the first update moves codes by (1 - decay) only.
        self.register_buffer("embed_sum", self.codebook.clone())

    def _init_codebook_storage(self) -> None:
        self.register_buffer("codebook", torch.randn(self.codebook_size, self.codebook_dim))

    def _codebook_loss(self, x: Tensor, q: Tensor) -> Tensor:
        return x.new_zeros(())

    @torch.no_grad()
    def _set_codes(self, which: Tensor, vectors: Tensor, counts: Tensor) -> None:
        counts = counts.clamp_min(1.0)
        self.codebook[which] = vectors
        self.cluster_size[which] = counts
        self.embed_sum[which] = vectors * counts[:, None]

    @torch.no_grad()
    def _update(self, x: Tensor, indices: Tensor, counts: Tensor) -> None:
        counts = all_reduce_sum(counts.clone())
        sums = all_reduce_sum(torch.zeros_like(self.embed_sum).index_add_(0, indices, x))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_threshold > 0:
            self._restart_dead_codes(x)

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, beta={self.beta}, decay={self.decay}, "
            f"eps={self.eps}, kmeans_init={self.kmeans_init}, dead_code_threshold={self.dead_code_threshold}"
        )
