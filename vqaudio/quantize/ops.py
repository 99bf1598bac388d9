"""Small pure helpers shared by the quantizers: nearest-code search, code statistics, k-means, DDP sync."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

# Bound on the number of distance entries held at once (rows x codes): 2**22 floats = 16 MiB.
_MAX_DIST_ELEMENTS = 1 << 22


def to_rows(z: Tensor) -> Tensor:
    """(B, D, T) -> (B*T, D), frames as rows."""
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def from_rows(x: Tensor, batch: int, frames: int) -> Tensor:
    """(B*T, D) -> (B, D, T)."""
    return x.reshape(batch, frames, -1).transpose(1, 2)


def nearest_code(x: Tensor, codebook: Tensor, cosine: bool = False) -> Tensor:
    """Index of the nearest codebook row for each row of ``x``, never materialising more than a chunk.

    l2 uses ``argmin(||e||^2 - 2 x.e^T)`` (``||x||^2`` is constant per row) in one ``addmm`` per chunk;
    cosine expects both inputs already l2-normalised and takes ``argmax(x.e^T)``. All chunks write into
    one reused distance buffer: a fresh 16 MiB tensor per chunk cost as much in page faults as the argmin.

    Args:
        x: ``(N, D)`` float32 rows.
        codebook: ``(K, D)`` float32 codes.

    Returns:
        ``(N,)`` int64 indices.
    """
    n, k = x.shape[0], codebook.shape[0]
    chunk = max(1, min(n, _MAX_DIST_ELEMENTS // max(k, 1)))
    out = torch.empty(n, dtype=torch.long, device=x.device)
    codes_t = codebook.t()
    e_sq = None if cosine else codebook.pow(2).sum(1)
    buf = x.new_empty(chunk, k)
    best = x.new_empty(chunk)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dist_ = buf[: stop - start]
        # torch.min/max with dim: the same first index as argmin/argmax, in half their time on a CPU row of 1024
        if cosine:
            torch.mm(x[start:stop], codes_t, out=dist_)
            torch.max(dist_, dim=1, out=(best[: stop - start], out[start:stop]))
        else:
            torch.addmm(e_sq, x[start:stop], codes_t, beta=1.0, alpha=-2.0, out=dist_)
            torch.min(dist_, dim=1, out=(best[: stop - start], out[start:stop]))
    return out


def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """(N,) int64 -> (K,) float32 counts, via bincount (no one-hot)."""
    return torch.bincount(indices.reshape(-1), minlength=codebook_size).float()


def usage_metrics(counts: Tensor) -> dict[str, Tensor]:
    """``perplexity`` = exp(entropy of code use) and ``usage`` = fraction of codes used, from (K,) counts."""
    total = counts.sum().clamp_min(1.0)
    p = counts / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"perplexity": entropy.exp(), "usage": (counts > 0).float().mean()}


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` in place over all ranks when running under torch.distributed; identity otherwise."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_from_rank0(t: Tensor) -> Tensor:
    """Make every rank hold rank 0's ``t`` (in place); identity outside torch.distributed."""
    if is_distributed():
        dist.broadcast(t, src=0)
    return t


def sample_rows(x: Tensor, num: int) -> Tensor:
    """``num`` rows of ``x`` drawn without replacement when possible, with replacement otherwise."""
    n = x.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=x.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=x.device)
    return x[idx]


def kmeans_plus_plus(x: Tensor, num_clusters: int) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each new centre drawn with probability
    proportional to its squared distance from the nearest centre chosen so far. O(N * K * D) in total.

    Args:
        x: ``(N, D)`` float32 rows.
        num_clusters: K.

    Returns:
        ``(K, D)`` initial centres (repeats only once every distinct row has been picked).
    """
    n = x.shape[0]
    centres = torch.empty(num_clusters, x.shape[1], dtype=x.dtype, device=x.device)
    pick = int(torch.randint(0, n, ()))
    centres[0] = x[pick]
    d2 = (x - x[pick]).pow(2).sum(1)
    for k in range(1, num_clusters):
        pick = int(torch.multinomial(d2, 1)) if bool(d2.sum() > 0) else int(torch.randint(0, n, ()))
        centres[k] = x[pick]
        torch.minimum(d2, (x - x[pick]).pow(2).sum(1), out=d2)
    return centres


def kmeans(x: Tensor, num_clusters: int, iters: int = 10, cosine: bool = False) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on rows of ``x`` from k-means++ seeds.

    Empty clusters keep their previous centroid. Under torch.distributed the result of rank 0 is
    broadcast so every rank starts from the same codebook.

    Args:
        x: ``(N, D)`` float32 rows.
        num_clusters: K.
        iters: Lloyd iterations.
        cosine: cluster on the unit sphere (spherical k-means).

    Returns:
        ``(K, D)`` centroids and ``(K,)`` float32 cluster sizes of the last assignment.
    """
    x = x.detach().float()
    if cosine:
        x = F.normalize(x, dim=1)
    centroids = kmeans_plus_plus(x, num_clusters)
    counts = torch.zeros(num_clusters, device=x.device)
    for _ in range(iters):
        assign = nearest_code(x, centroids, cosine=cosine)
        counts = code_counts(assign, num_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        if cosine:
            centroids = F.normalize(centroids, dim=1)
    broadcast_from_rank0(centroids)
    broadcast_from_rank0(counts)
    return centroids, counts


class PointwiseLinear(torch.nn.Module):
    """Linear map over the channels of ``(B, C_in, T)`` -> ``(B, C_out, T)``, no transposes.

    One batched GEMM (``baddbmm``) on the channels-first layout; faster on CPU than transposing to
    rows for ``nn.Linear`` or a kernel-size-1 ``conv1d``. Parameters are shaped like ``nn.Linear``'s.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        layer = torch.nn.Linear(in_channels, out_channels)
        self.weight = torch.nn.Parameter(layer.weight.detach())
        self.bias = torch.nn.Parameter(layer.bias.detach())

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        return torch.baddbmm(self.bias[None, :, None], self.weight.expand(batch, -1, -1), x)

    def extra_repr(self) -> str:
        return f"in_channels={self.weight.shape[1]}, out_channels={self.weight.shape[0]}"
