"""CPU inference of a stack of :class:`~vqaudio.models.layers.TimeMajor` layers in windows of a few fixed
lengths.

Every input is cut into windows of the :data:`CHUNK_FRAMES` lengths (:func:`chunk_plan`), each with the
frames of context its kept frames depend on (:func:`context_frames`), so oneDNN only ever sees a few
shapes: it compiles a primitive per shape, and with a new shape per utterance that cost 20 % of an encode
and glibc kept ~10 MiB per shape. Rows past the end of the input are zeroed after every layer, which is
exactly the layers' zero padding, so a window's kept frames are those of the whole-sequence pass.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from .layers import TimeMajor, run_time_major

__all__ = ["CHUNK_FRAMES", "WINDOW_COST", "chunk_plan", "context_frames", "forward_windows"]

# Window sizes, in frames of the chunk grid (latent frames: 20 ms at the default hop), a ratio of about 1.4
# apart. oneDNN JIT-compiles a conv primitive per input shape (~20 % of a time-major encode when every
# utterance is a new length) and its channels-last path kept ~10 MiB of glibc heap per shape (RSS 1.7 GiB on
# speech-mini); with these few shapes both are paid once. Context frames and the padded last window cost
# 3-4 % of compute over 1-20 s utterances; up to 500 frames (10 s) fit one window with no context at all.
CHUNK_FRAMES = (500, 350, 250, 175, 125, 90, 64, 45, 32, 16)
# A window's fixed cost in frames: ~150 op launches, 1-1.5 ms, about 2 frames of encoder work on one thread.
WINDOW_COST = 2


@functools.lru_cache(maxsize=4096)
def chunk_plan(
    frames: int, before: int, after: int, sizes: tuple[int, ...] = CHUNK_FRAMES
) -> tuple[tuple[int, int, int, int], ...]:
    """The windows that compute ``frames`` frames with the least work: ``(start, size, first, last)`` each,
    a window of ``size`` frames from ``start`` whose frames ``first ... last - 1`` are kept.

    A window needs ``before`` frames of context on its left unless it starts at frame 0, where the layers'
    own zero padding is the truth, and ``after`` frames on its right unless it reaches past the end, where
    its frames beyond the end are zeroed after every layer. Found by dynamic programming over the frame
    where the kept frames end, each window costing its size plus ``WINDOW_COST``.
    """
    if frames < 1:
        raise ValueError(f"chunk_plan: frames must be >= 1, got {frames}")
    inf = float("inf")
    cost, prev = [inf] * (frames + 1), [(0, 0)] * (frames + 1)
    cost[0] = 0
    best = (inf, 0, 0)  # (frames computed, kept so far, size of the last window)
    for kept in range(frames):
        if cost[kept] == inf:
            continue
        start = kept - before if kept else 0
        for size in sizes:
            if start + size >= frames:
                best = min(best, (cost[kept] + size + WINDOW_COST, kept, size))
            elif start + size - after > kept and cost[kept] + size + WINDOW_COST < cost[start + size - after]:
                cost[start + size - after] = cost[kept] + size + WINDOW_COST
                prev[start + size - after] = (kept, size)
    if best[0] == inf:
        raise ValueError(f"chunk_plan: window sizes {sizes} are too small for context {before} + {after} frames")
    windows, (kept, size), last = [], best[1:], frames
    while True:
        windows.append((kept - before if kept else 0, size, kept, last))
        if not kept:
            return tuple(reversed(windows))
        last, (kept, size) = kept, prev[kept]


def context_frames(layers, frame_rows: int) -> tuple[int, int]:
    """Frames of the chunk grid on the left and right of a chunk that its outputs depend on: each layer's
    ``time_major_context`` summed over the stack, in frames of the grid (``frame_rows`` input rows each)."""
    left = right = 0.0
    scale = 1.0 / frame_rows  # grid frames per row at the current layer's input
    for layer in layers:
        if isinstance(layer, TimeMajor):
            lo, hi, rate = layer.time_major_context()
            left, right = left + lo * scale, right + hi * scale
            scale /= float(rate)
    return math.ceil(left - 1e-9), math.ceil(right - 1e-9)


def forward_windows(layers, x: Tensor, frame_rows: int, chunk_frames: tuple[int, ...] = CHUNK_FRAMES) -> Tensor:
    """The layers on ``x``, time-major, in windows of fixed sizes; equal to running them to float rounding.

    Args:
        layers: a sequence of layers that all have a fast path (:func:`~vqaudio.models.layers.has_fast_path`).
        x: ``(B, C, T)`` with ``T`` a multiple of ``frame_rows``; never written.
        frame_rows: input rows per frame of the chunk grid: ``hop_length`` for an encoder, 1 for a decoder.
        chunk_frames: the window sizes, largest first.

    Returns:
        ``(B, C', T')``, as the layers give it.
    """
    b, c, t = x.shape
    if t % frame_rows:
        raise ValueError(f"forward_windows: length {t} is not a multiple of frame_rows={frame_rows}")
    frames = t // frame_rows
    out = None
    with torch.no_grad(), parametrize.cached():  # weight norm computed once per call, not once per use
        for start, size, first, last in chunk_plan(frames, *context_frames(layers, frame_rows), chunk_frames):
            real = min(start + size, frames) - start  # frames of the window holding input
            buf = x.new_empty(b, size * frame_rows, c)  # (B, T, C)
            buf[:, : real * frame_rows] = x[:, :, start * frame_rows : (start + real) * frame_rows].transpose(1, 2)
            buf[:, real * frame_rows :] = 0
            y, _ = run_time_major(layers, buf, real * frame_rows if real < size else None)
            rows = y.shape[1] // size  # output rows per frame
            if out is None:
                out = y.new_empty(b, y.shape[-1], frames * rows)
            out[:, :, first * rows : last * rows] = y[:, (first - start) * rows : (last - start) * rows].transpose(1, 2)
    return out
