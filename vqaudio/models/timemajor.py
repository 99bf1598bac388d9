"""CPU inference of the SEANet encoder and decoder with activations stored time-major, ``(B, T, C)``, in
windows of a few fixed lengths.

The same function as running the layers (tested to float rounding), faster on CPU because no activation
is ever reshaped between layers:

- ``(B, T, C)`` memory *is* the channels-last layout of a ``(B, C, 1, T)`` image, so convolutions run as
  oneDNN's channels-last 2-D convs on a view, which on one thread are 1.3-2.5x faster than channels-first
  ``conv1d`` at these widths (16-512 channels over up to 160,000 samples per 10 s);
- a 1x1 conv is one GEMM, and a residual unit's 1x1 conv accumulates into the unit's input in place
  (no separate skip add);
- a transposed conv with kernel ``2s`` is two GEMMs whose ``(frames, s * C_out)`` outputs already are the
  ``(frames * s, C_out)`` waveform rows: the overlap-add is an in-place GEMM into rows shifted by one;
- the conv to the waveform (one output channel) is one GEMM for all taps followed by a shifted sum.

Every input is cut into windows of the :data:`CHUNK_FRAMES` lengths (:func:`chunk_plan`), each with the
frames of context its kept frames depend on (:func:`context_frames`), so oneDNN only ever sees a few
shapes: it compiles a primitive per shape, and with a new shape per utterance that cost 20 % of an encode
and glibc kept ~10 MiB per shape. Rows past the end of the input are zeroed after every layer, which is
exactly the layers' zero padding, so a window's kept frames are those of the whole-sequence pass.

Used by ``Encoder.forward`` and ``Decoder.forward`` when :func:`supports_time_major` holds (CPU, float, no
autograd): intermediate tensors are overwritten, which autograd would forbid.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["CHUNK_FRAMES", "chunk_plan", "context_frames", "forward_time_major", "supports_time_major"]


# Window sizes, in frames of the chunk grid (latent frames: 20 ms at the default hop), a ratio of about 1.4
# apart. oneDNN JIT-compiles a conv primitive per input shape (~20 % of a time-major encode when every
# utterance is a new length) and its channels-last path kept ~10 MiB of glibc heap per shape (RSS 1.7 GiB on
# speech-mini); with these few shapes both are paid once. Context frames and the padded last window cost
# 3-4 % of compute over 1-20 s utterances; up to 500 frames (10 s) fit one window with no context at all.
CHUNK_FRAMES = (500, 350, 250, 175, 125, 90, 64, 45, 32, 16)
# A window's fixed cost in frames: ~150 op launches, 1-1.5 ms, about 2 frames of encoder work on one thread.
WINDOW_COST = 2
# Elements per block of rows for ELU and the residual bias add (1 MiB of float32), whose passes then run in
# cache: for ELU 256K-512K elements measured fastest, 1M slower.
_BLOCK = 1 << 18


def supports_time_major(x: Tensor) -> bool:
    """Whether :func:`forward_time_major` applies to ``x``: on CPU, float32/64, autograd off."""
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not torch.is_grad_enabled()


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


def context_frames(net: nn.Sequential, frame_rows: int) -> tuple[int, int]:
    """Frames of the chunk grid on the left and right of a chunk that its outputs depend on.

    A conv's output ``i`` reads inputs ``i * s - left ... i * s - left + (k - 1) * d``; a transposed conv's
    output row ``p`` reads input rows ``(p + trim) // s - 1`` and ``(p + trim) // s``, at most
    ``1 + (s - 1 - trim) / s`` rows before ``p / s`` and ``trim / s`` after it. Summed over layers, each in
    frames of the grid.
    """
    from .seanet import PaddedConv1d, PaddedConvTranspose1d, ResidualUnit

    left = right = 0.0
    scale = 1.0 / frame_rows  # grid frames per row at the current layer's input
    convs = (m for layer in net for m in (layer.block if isinstance(layer, ResidualUnit) else [layer]))
    for layer in convs:
        if isinstance(layer, PaddedConv1d):
            k, d, s = layer.conv.kernel_size[0], layer.conv.dilation[0], layer.conv.stride[0]
            left += layer.left * scale
            right += ((k - 1) * d - layer.left) * scale
            scale *= s
        elif isinstance(layer, PaddedConvTranspose1d):
            s, trim = layer.conv.stride[0], layer.trim[0]
            left += (1 + (s - 1 - trim) / s) * scale
            right += trim / s * scale
            scale /= s
    return math.ceil(left - 1e-9), math.ceil(right - 1e-9)


def forward_time_major(
    net: nn.Sequential, x: Tensor, frame_rows: int, chunk_frames: tuple[int, ...] = CHUNK_FRAMES
) -> Tensor:
    """``net(x)`` for a ``Decoder.net`` or ``Encoder.net``, computed time-major in windows of fixed sizes.

    Windows come from :func:`chunk_plan` with :func:`context_frames` of context; rows past the end of the
    input are zeroed after every layer, exactly as the layers' own zero padding sees them, and each window
    keeps only frames whose context it holds, so the result is ``net(x)`` to float rounding (tested).

    Args:
        net: a Sequential of ``PaddedConv1d``, ``PaddedConvTranspose1d``, ``ResidualUnit`` and activations.
        x: ``(B, C, T)`` with ``T`` a multiple of ``frame_rows``.
        frame_rows: input rows per frame of the chunk grid: ``hop_length`` for an encoder, 1 for a decoder.
        chunk_frames: the window sizes, largest first.

    Returns:
        ``(B, C', T')``, as ``net(x)``.
    """
    b, c, t = x.shape
    if t % frame_rows:
        raise ValueError(f"forward_time_major: length {t} is not a multiple of frame_rows={frame_rows}")
    frames = t // frame_rows
    out = None
    with parametrize.cached():  # weight norm computed once per call, not once per use
        for start, size, first, last in chunk_plan(frames, *context_frames(net, frame_rows), chunk_frames):
            real = min(start + size, frames) - start  # frames of the window holding input
            buf = x.new_empty(b, size * frame_rows, c)  # (B, T, C)
            buf[:, : real * frame_rows] = x[:, :, start * frame_rows : (start + real) * frame_rows].transpose(1, 2)
            buf[:, real * frame_rows :] = 0
            y, rows = _run(net, buf, real if real < size else None, frame_rows)
            if out is None:
                out = y.new_empty(b, y.shape[-1], frames * rows)
            out[:, :, first * rows : last * rows] = y[:, (first - start) * rows : (last - start) * rows].transpose(1, 2)
    return out


def _run(net: nn.Sequential, h: Tensor, end: int | None, rows: int) -> tuple[Tensor, int]:
    """The layers of ``net`` on one ``(B, T, C)`` window holding ``rows`` rows per frame; rows from frame
    ``end`` on are zeroed after every layer. Returns the output and its rows per frame."""
    from .seanet import PaddedConv1d, PaddedConvTranspose1d, ResidualUnit

    pending: nn.Module | None = None  # an activation to apply on the way into the next conv
    for layer in net:
        if isinstance(layer, ResidualUnit):
            h = _residual_unit(layer, h)
        elif isinstance(layer, PaddedConv1d):
            h = _conv(layer, h, pending)
            pending = None
            rows //= layer.conv.stride[0]
        elif isinstance(layer, PaddedConvTranspose1d):
            h = _conv_transpose(layer, h if pending is None else _activate(pending, h, out=h))
            pending = None
            rows *= layer.conv.stride[0]
        else:
            if pending is not None:
                h = _activate(pending, h, out=h)
            pending = layer
            continue
        if end is not None:  # every activation maps 0 to 0, so zeroed rows stay zero through them
            h[:, end * rows :] = 0
    if pending is not None:
        h = _activate(pending, h, out=h)
    return h, rows


def _activate(act: nn.Module, x: Tensor, out: Tensor | None = None) -> Tensor:
    """``act(x)`` for ``(B, T, C)`` ``x``, into ``out`` (may be ``x``) or a new tensor."""
    from .seanet import Snake

    if isinstance(act, nn.ELU) and act.alpha == 1.0:
        return _elu(x, torch.empty_like(x) if out is None else out)
    if isinstance(act, nn.LeakyReLU):
        return torch.ops.aten.leaky_relu.out(x, act.negative_slope, out=torch.empty_like(x) if out is None else out)
    if isinstance(act, Snake):
        alpha = act.alpha.reshape(-1)  # (1, C, 1) -> per channel, the last dim here
        y = x + (alpha * x).sin().pow(2) / (alpha + 1e-9)
        return y if out is None else out.copy_(y)
    raise TypeError(f"forward_time_major: unsupported activation {act}")


def _elu(x: Tensor, out: Tensor) -> Tensor:
    """ELU of ``(B, T, C)`` ``x`` into ``out`` (may be ``x``), in blocks of rows of about 1 MiB.

    Its four passes (below) then run in L2 cache: 20-25 % faster than whole-tensor passes over the 5-20 MB
    activations of a 10 s decode, where ELU takes about a third of the time.
    """
    rows = min(x.shape[1], max(1, _BLOCK // max(1, x.shape[0] * x.shape[2])))
    scratch = x.new_empty(x.shape[0], rows, x.shape[2]) if out.data_ptr() == x.data_ptr() else None
    for block, into in zip(x.split(rows, 1), out.split(rows, 1), strict=True):
        _elu_block(block, into, into if scratch is None else scratch[:, : block.shape[1]])
    return out


def _elu_block(x: Tensor, out: Tensor, neg: Tensor) -> Tensor:
    """ELU as ``max(x, exp(min(x, 0)) - 1)``, into ``out`` (may be ``x``), through ``neg`` (``out`` itself
    unless that is ``x``).

    Equal to ``F.elu`` to 6e-8 (``exp - 1`` instead of ``expm1``): ATen's vectorised ``expm1`` costs twice
    its ``exp``. 10-15 % faster as an op, 5.5 % of a whole decode.
    """
    torch.clamp_max(x, 0.0, out=neg)
    return torch.maximum(neg.exp_().sub_(1.0), x, out=out)


def _gemm_into(out: Tensor, a: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``out = a @ w + bias`` if ``bias`` is given, else ``out += a @ w``; ``out``, ``a``: ``(B, M, .)``."""
    for i in range(out.shape[0]):
        if bias is not None:
            torch.addmm(bias, a[i], w, out=out[i])
        else:
            out[i].addmm_(a[i], w)
    return out


def _conv(layer: nn.Module, x: Tensor, act: nn.Module | None) -> Tensor:
    """A ``PaddedConv1d`` applied to ``act(x)``: ``(B, T, C_in)`` -> ``(B, T // stride, C_out)``."""
    conv = layer.conv
    w, bias = conv.weight, conv.bias  # (C_out, C_in, k)
    cout, _, k = w.shape
    s, d = conv.stride[0], conv.dilation[0]
    frames = x.shape[1] // s
    if k == 1 and s == 1:
        x = x if act is None else _activate(act, x)
        return _gemm_into(x.new_empty(x.shape[0], frames, cout), x, w[:, :, 0].t(), bias)
    if cout == 1:
        return _conv_narrow(layer, x, act, frames)
    # Channels-last view (B, C, 1, T) of the same memory: oneDNN's fast NHWC kernels, padding included.
    image = (x if act is None else _activate(act, x)).transpose(1, 2).unsqueeze(2)
    y = F.conv2d(image, w.unsqueeze(2), bias, stride=(1, s), padding=(0, layer.left), dilation=(1, d))
    y = y.squeeze(2).transpose(1, 2)  # (B, T', C_out), contiguous when oneDNN kept channels-last
    return y[:, :frames].contiguous()


def _padded(x: Tensor, act: nn.Module | None, left: int, length: int) -> Tensor:
    """``act(x)`` (or ``x``), ``(B, T, C)``, after ``left`` zero rows and before zero rows up to ``length`` rows."""
    b, t, c = x.shape
    buf = x.new_empty(b, max(length, left + t), c)
    buf[:, :left] = 0
    buf[:, left + t :] = 0
    if act is None:
        buf[:, left : left + t] = x
    else:
        _activate(act, x, out=buf[:, left : left + t])
    return buf


def _conv_narrow(layer: nn.Module, x: Tensor, act: nn.Module | None, frames: int) -> Tensor:
    """A conv to one channel (the waveform): one GEMM for every tap at every row, then a shifted sum.

    The GEMM is ``(k, C) @ (C, T)``, taps by rows: 2.5x faster than ``(T, C) @ (C, k)`` with its 7-wide
    output, and each tap's row is then contiguous for the sum.
    """
    conv = layer.conv
    w, bias = conv.weight, conv.bias
    k = w.shape[-1]
    s, d = conv.stride[0], conv.dilation[0]
    last = (frames - 1) * s + 1  # rows spanned by one tap's strided view
    buf = _padded(x, act, layer.left, last + (k - 1) * d)
    # out[f] = sum_j taps[j, f * s + j * d]
    taps = torch.matmul(w[0].t(), buf.transpose(1, 2))  # (B, k, T)
    out = taps[:, 0, 0:last:s].clone().add_(bias)
    for j in range(1, k):
        out.add_(taps[:, j, j * d : j * d + last : s])
    return out.unsqueeze(-1)


def _split_transposed(w: Tensor, bias: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(C_in, C_out, 2s)`` transposed-conv weights -> the two ``(C_in, s * C_out)`` GEMM halves, bias per row.

    Output row ``j * s + r``, channel ``o``: ``x[j] @ w[:, o, r] + x[j - 1] @ w[:, o, s + r]``.
    """
    cin, cout, _ = w.shape
    first = w[:, :, :s].transpose(1, 2).reshape(cin, s * cout)
    second = w[:, :, s:].transpose(1, 2).reshape(cin, s * cout)
    return first, second, bias.repeat(s)


def _cached(layer: nn.Module, build):
    """``build()``, kept on ``layer`` until any of its parameters moves or changes (in-place updates bump
    ``Tensor._version``; ``.to()`` and loading replace or copy into them)."""
    key = tuple((p.data_ptr(), p._version, p.dtype) for p in layer.parameters())
    hit = layer.__dict__.get("_time_major_cache")
    if hit is None or hit[0] != key:
        hit = (key, build())
        layer.__dict__["_time_major_cache"] = hit
    return hit[1]


def _conv_transpose(layer: nn.Module, x: Tensor) -> Tensor:
    """A ``PaddedConvTranspose1d`` (kernel 2s, stride s): ``(B, L, C_in)`` -> ``(B, L * s, C_out)``."""
    s = layer.conv.stride[0]
    first, second, bias = _cached(layer, lambda: _split_transposed(layer.conv.weight, layer.conv.bias, s))
    b, frames, _ = x.shape
    cout = bias.shape[0] // s
    out = x.new_empty(b, frames + 1, s * cout)
    _gemm_into(out[:, :frames], x, first, bias)
    out[:, frames] = bias
    _gemm_into(out[:, 1:], x, second, None)
    left, right = layer.trim
    return out.view(b, (frames + 1) * s, cout)[:, left : (frames + 1) * s - right]


def _residual_unit(unit: nn.Module, x: Tensor) -> Tensor:
    """act -> dilated conv -> act -> 1x1 conv, accumulated into ``x`` in place."""
    act1, conv1, act2, conv2 = unit.block
    hidden = _conv(conv1, x, act1)
    _activate(act2, hidden, out=hidden)
    pw = conv2.conv
    w, bias = pw.weight[:, :, 0].t(), pw.bias
    rows = max(1, _BLOCK // x.shape[2])  # the bias add then reads each block of the GEMM's output from cache
    for i in range(x.shape[0]):
        for block, h in zip(x[i].split(rows), hidden[i].split(rows), strict=True):
            block.addmm_(h, w).add_(bias)
    return x
