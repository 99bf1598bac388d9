"""Long context on the latents: a unidirectional LSTM with a skip connection, at the frame rate.

EnCodec (Défossez et al. 2022, sec. 3.1) ends its encoder and starts its decoder with a 2-layer LSTM; at
equal training compute on 2 CPU cores its architecture without the LSTM lost 0.074 STOI
(benchmarks/README.md). Here the LSTM runs on the ``latent_dim`` latents (128 by default), outside the
convolution stacks, so their windowed CPU inference, chunked encoding and receptive fields are unchanged,
and it is run over the whole sequence of frames. Its width is its own (``CodecConfig.lstm_dim``; EnCodec's
LSTMs have 512 units): one thread runs a 2-layer LSTM of 128 units over 10 s of frames in 3 ms, of 512
units in 51 ms. The default codec has 2 layers of 512 units on both sides and one residual unit per
resolution in its convolution stacks: at equal training time that beat three dilated units per resolution
without LSTMs by 0.036 STOI; 128-unit LSTMs beside the three units brought nothing.
Unidirectional, it is causal: a streaming codec carries its ``(h, c)`` from chunk to chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
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


# Sequences per LSTM batch: one thread's time per utterance falls 5.6x from 1 to 8 sequences of a 2-layer
# 512-unit LSTM and flattens past 16 (44.6 ms per 10 s at 16, 41.6 at 32; benchmarks/README.md, extraction).
GROUP_SIZE = 32
# Padded frames a batch may hold, as a share of its real frames: padding costs as much as real frames, and
# packed sequences ran 1.3x slower than padding 39 % (16 sequences of 200-800 frames, one thread).
GROUP_PADDING = 0.25


def length_groups(lengths: Sequence[int], size: int = GROUP_SIZE, padding: float = GROUP_PADDING) -> list[list[int]]:
    """Indices of ``lengths`` in batches for a right-padded pass (the LSTM's, or the encoder's on a GPU):
    longest first, at most ``size`` per batch, each batch's padded frames at most ``padding`` of its real ones
    (a batch of one needs none)."""
    if size < 1 or padding < 0:
        raise ValueError(f"length_groups: size must be >= 1 and padding >= 0, got {size}, {padding}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    real = 0
    for i in order:
        group = groups[-1] if groups else None
        if group and len(group) < size and (len(group) + 1) * lengths[group[0]] <= (1 + padding) * (real + lengths[i]):
            group.append(i)
            real += lengths[i]
        else:
            groups.append([i])
            real = lengths[i]
    return groups
