"""Long context on the latents: a unidirectional LSTM with a skip connection, at the frame rate.

EnCodec (Défossez et al. 2022, sec. 3.1) ends its encoder and starts its decoder with a 2-layer LSTM; at
equal training compute on 2 CPU cores its architecture without the LSTM lost 0.074 STOI
(benchmarks/README.md). Here the LSTM runs on the ``latent_dim`` latents (128 by default), outside the
convolution stacks, so their windowed CPU inference, chunked encoding and receptive fields are unchanged,
and it is run over the whole sequence of frames. Its width is its own (``CodecConfig.lstm_dim``; EnCodec's
LSTMs have 512 units): one thread runs a 2-layer LSTM of 128 units over 10 s of frames in 3 ms, of 512
units in 51 ms. With the SEANet decoder, 2 layers of 512 units on both sides and one residual unit per
resolution beat three dilated units per resolution without LSTMs by 0.036 STOI at equal training time. With
the iSTFT decoder, 128 units (the default, ``latent_dim``) on the encoder side match 512 at equal training
time and encode 4.5x faster (benchmarks/README.md). Extraction runs it over many utterances at once
(:func:`length_groups`).
Unidirectional, it is causal: a streaming codec carries its ``(h, c)`` from chunk to chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


class LatentLSTM(nn.Module):
    """``(B, D, T)`` -> ``(B, D, T)``: ``x + W LSTM(x)``, ``layers`` layers of ``hidden`` units.

    Args:
        dim: latent channels D.
        layers: stacked LSTM layers (EnCodec: 2).
        hidden: units per layer; ``None`` means ``dim`` (then W is the identity, as in EnCodec's SLSTM);
            otherwise a linear map W takes the last layer's ``hidden`` outputs back to D.
    """

    def __init__(self, dim: int, layers: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        self.lstm = nn.LSTM(dim, hidden, layers, batch_first=True)
        self.out = nn.Identity() if hidden == dim else nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x, None)[0]

    def init_state(self, batch: int, device=None, dtype=None) -> LSTMState:
        """The state before any frame: zeros ``(layers, B, hidden)`` for ``h`` and ``c``."""
        param = self.lstm.weight_hh_l0
        shape = (self.lstm.num_layers, batch, self.lstm.hidden_size)
        device, dtype = device or param.device, dtype or param.dtype
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """``(B, D, k)`` frames after ``state`` (``None``: the start) -> output and the new state; ``state``
        itself is not changed, so concatenated steps equal one pass over all the frames."""
        y, new = self.lstm(x.transpose(1, 2), state)  # (B, k, hidden)
        return x + self.out(y).transpose(1, 2), new

    def forward_batch(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """``(D, T_i)`` sequences of any lengths -> their outputs, each equal to its own pass to float rounding:
        run together, right-padded, in the batches of :func:`length_groups` (causal: a sequence's frames never
        see its padding), so the recurrent products are matrix-matrix."""
        out: list[Tensor | None] = [None] * len(xs)
        for group in length_groups([x.shape[-1] for x in xs]):
            frames = xs[group[0]].shape[-1]
            y = self(torch.stack([F.pad(xs[i], (0, frames - xs[i].shape[-1])) for i in group]))  # (B, D, T')
            for row, i in enumerate(group):
                out[i] = y[row, :, : xs[i].shape[-1]]
        return out


# Sequences per LSTM batch at most (memory: a batch holds size x its longest frames).
GROUP_SIZE = 32
# Sequences a batch runs for the price of one: one thread's time per step of a 2-layer 512-unit LSTM is flat
# from 1 to 8 sequences (reading the weights dominates), then grows with the batch: 28.8, 41.4, 43.6, 40.9,
# 71.4 and 133 ms per 10 s of frames at 1, 2, 4, 8, 16 and 32 sequences.
GROUP_FLAT = 8


def length_groups(lengths: Sequence[int], size: int = GROUP_SIZE, flat: int = GROUP_FLAT) -> list[list[int]]:
    """Indices of ``lengths`` in batches for a right-padded pass (the LSTM's, or the encoder's on a GPU), longest
    first, at most ``size`` per batch, that minimise the total cost when a batch costs its longest length times
    ``max(flat, its count)``: found by dynamic programming over the lengths sorted longest first (an optimal
    batching takes them in runs of that order)."""
    if size < 1 or flat < 1:
        raise ValueError(f"length_groups: size and flat must be >= 1, got {size}, {flat}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    cost, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for end in range(1, n + 1):
        for start in range(max(0, end - size), end):
            c = cost[start] + lengths[order[start]] * max(flat, end - start)
            if c < cost[end]:
                cost[end], cut[end] = c, start
    groups, end = [], n
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]
