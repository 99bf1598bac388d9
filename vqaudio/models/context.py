"""Long context on the latents: a unidirectional LSTM with a skip connection, at the frame rate.

EnCodec (Défossez et al. 2022, sec. 3.1) ends its encoder and starts its decoder with a 2-layer LSTM; at
equal training compute on 2 CPU cores its architecture without the LSTM lost 0.074 STOI
(benchmarks/README.md). Here the LSTM runs on the ``latent_dim`` latents (128 by default), where it costs
little beside the convolutions: it sits outside the convolution stacks, so their windowed CPU inference,
chunked encoding and receptive fields are unchanged, and it is run over the whole sequence of frames.
Unidirectional, it is causal: a streaming codec carries its ``(h, c)`` from chunk to chunk.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LSTMState = tuple[Tensor, Tensor]


class LatentLSTM(nn.Module):
    """``(B, D, T)`` -> ``(B, D, T)``: ``x + LSTM(x)``, ``layers`` layers of ``dim`` units.

    Args:
        dim: latent channels D.
        layers: stacked LSTM layers (EnCodec: 2).
    """

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, layers, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(x, None)[0]

    def init_state(self, batch: int, device=None, dtype=None) -> LSTMState:
        """The state before any frame: zeros ``(layers, B, D)`` for ``h`` and ``c``."""
        param = self.lstm.weight_hh_l0
        shape = (self.lstm.num_layers, batch, self.lstm.hidden_size)
        device, dtype = device or param.device, dtype or param.dtype
        return torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)

    def step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """``(B, D, k)`` frames after ``state`` (``None``: the start) -> output and the new state; ``state``
        itself is not changed, so concatenated steps equal one pass over all the frames."""
        y, new = self.lstm(x.transpose(1, 2), state)  # (B, k, D)
        return x + y.transpose(1, 2), new
