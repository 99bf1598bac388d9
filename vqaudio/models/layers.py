"""The SEANet layers, each with its CPU inference over time-major ``(B, T, C)`` activations beside ``forward``.

``forward`` takes channels-first ``(B, C, T)`` and serves training, autograd and GPUs. ``time_major`` is the
same function on a ``(B, T, C)`` window, for CPU inference (:mod:`vqaudio.models.windows` runs it), and is
faster there because no activation is ever reshaped between layers:

- ``(B, T, C)`` memory *is* the channels-last layout of a ``(B, C, 1, T)`` image, so convolutions run as
  oneDNN's channels-last 2-D convs on a view, 1.3-2.5x faster on one thread than channels-first ``conv1d``
  at 16-512 channels;
- a 1x1 conv is one GEMM, and a residual unit's 1x1 conv accumulates into the unit's input in place;
- a transposed conv with kernel ``2s`` is two GEMMs whose ``(frames, s * C_out)`` outputs already are the
  ``(frames * s, C_out)`` waveform rows: the overlap-add is an in-place GEMM into rows shifted by one;
- the conv to the waveform (one output channel) is one GEMM for all taps followed by a shifted sum.

The time-major protocol (:class:`TimeMajor`): ``time_major(h, pre, valid)`` computes the layer on ``h``
after applying the activation ``pre`` (fused into the layer's first pass), where only the first ``valid``
rows of ``h`` hold input (the rest are zeros standing for the layers' zero padding); it may overwrite ``h``.
``time_major_context()`` gives the input rows it reads left and right of an output row and its output rows
per input row. :func:`has_fast_path` decides whether a module's ``time_major`` can be trusted.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from ..errors import UserError

log = logging.getLogger(__name__)

ACTIVATIONS = ("elu", "snake", "leaky_relu")

# _ZERO_BIAS: conv biases start at zero (as in DAC's init_weights). With PyTorch's default uniform biases
# the signal shrinks through ~20 convs while every bias adds a constant, so a fresh encoder's latents
# varied over time by 2 % of their size: the decoder learnt to ignore them and the tiny recipe codec
# used 1-2 % of its codes (perplexity ~1.3). With zero biases the same run keeps perplexity 25-70.

# Elements per block of rows for ELU and the residual bias add (1 MiB of float32), whose passes then run in
# cache: for ELU 256K-512K elements measured fastest, 1M slower.
BLOCK = 1 << 18
# Smallest |alpha| for which a Snake's 1 / alpha is folded into the next conv's weights (Snake.foldable); the
# default codec's trained alphas lie in 0.84-1.30 after 60 min of training (initial 1).
FOLD_MIN_ALPHA = 0.1


def _block_rows(x: Tensor) -> int:
    """Rows of ``(B, T, C)`` ``x`` per block of about ``BLOCK`` elements (at least one, at most ``T``)."""
    return min(x.shape[1], max(1, BLOCK // max(1, x.shape[0] * x.shape[2])))


class TimeMajor(nn.Module):
    """A layer with time-major CPU inference beside ``forward`` (see the module docstring)."""

    # The method that holds the time-major form (checked against ``forward`` by :func:`has_fast_path`).
    fast_method = "time_major"

    # Whether ``time_major`` may write into its input ``h`` (a caller that still needs ``h`` copies it).
    overwrites_input = True

    def time_major(self, h: Tensor, pre: Activation | None = None, valid: int | None = None) -> Tensor:
        """``self`` on ``pre(h)``, ``h`` of shape ``(B, T, C)``; rows from ``valid`` on are padding."""
        raise NotImplementedError

    def time_major_context(self) -> tuple[float, float, Fraction]:
        """Input rows read before and after an output row's position, and output rows per input row."""
        return 0.0, 0.0, Fraction(1)

    def time_major_parts(self) -> tuple[nn.Module, ...]:
        """Submodules whose own ``time_major`` this layer's relies on."""
        return ()


def _defining_class(cls: type, name: str) -> type | None:
    return next((k for k in cls.__mro__ if name in k.__dict__), None)


def has_fast_path(module: nn.Module) -> bool:
    """Whether ``module``'s time-major form computes its ``forward``: the class that defines that form
    (``fast_method``) is the one that defines ``forward`` or a subclass of it (so a subclass that overrides
    only ``forward`` is refused), and the same holds for every part it relies on."""
    if not isinstance(module, TimeMajor):
        return False
    fast = _defining_class(type(module), module.fast_method)
    plain = _defining_class(type(module), "forward")
    if fast in (TimeMajor, Activation) or plain is None or not issubclass(fast, plain):
        return False
    return all(has_fast_path(part) for part in module.time_major_parts())


def run_time_major(layers, h: Tensor, valid: int | None) -> tuple[Tensor, int | None]:
    """``layers`` in turn on ``(B, T, C)`` ``h`` (which may be overwritten), each activation fused into the
    layer after it; rows from ``valid`` on are zeroed after every layer, exactly the layers' zero padding.
    Returns the output and its number of valid rows (``None``: all)."""
    pending: Activation | None = None
    for layer in layers:
        if isinstance(layer, Activation):
            if pending is not None:
                h = pending.activate(h, out=h)
            pending = layer
            continue
        h = layer.time_major(h, pending, valid)
        pending = None
        if valid is not None:  # every activation maps 0 to 0, so zeroed rows stay zero through them
            valid = int(valid * layer.time_major_context()[2])
            h[:, valid:] = 0
    if pending is not None:
        h = pending.activate(h, out=h)
    return h, valid


class Activation(TimeMajor):
    """An elementwise activation with ``f(0) = 0``; ``activate`` is its time-major form."""

    fast_method = "activate"

    def activate(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """``self(x)`` for ``(B, T, C)`` ``x``, into ``out`` (may be ``x``) or a new tensor."""
        raise NotImplementedError

    def time_major(self, h: Tensor, pre: Activation | None = None, valid: int | None = None) -> Tensor:
        if pre is not None:
            h = pre.activate(h, out=h)
        return self.activate(h, out=h)


class ELU(nn.ELU, Activation):
    """ELU (alpha 1); time-major as ``max(x, exp(min(x, 0)) - 1)`` in cache-sized row blocks."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__(alpha=1.0, inplace=inplace)

    def activate(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Row blocks of about 1 MiB, so the four passes run in L2 cache: 20-25 % faster than whole-tensor
        passes over the 5-20 MB activations of a 10 s decode, where ELU takes about a third of the time."""
        out = torch.empty_like(x) if out is None else out
        rows = _block_rows(x)
        scratch = x.new_empty(x.shape[0], rows, x.shape[2]) if out.data_ptr() == x.data_ptr() else None
        for block, into in zip(x.split(rows, 1), out.split(rows, 1), strict=True):
            _elu_block(block, into, into if scratch is None else scratch[:, : block.shape[1]])
        return out


def _elu_block(x: Tensor, out: Tensor, neg: Tensor) -> Tensor:
    """ELU as ``max(x, exp(min(x, 0)) - 1)``, into ``out`` (may be ``x``), through ``neg`` (``out`` itself
    unless that is ``x``). Equal to ``F.elu`` to 6e-8 (``exp - 1`` instead of ``expm1``): ATen's vectorised
    ``expm1`` costs twice its ``exp``. 10-15 % faster as an op, 5.5 % of a whole decode."""
    torch.clamp_max(x, 0.0, out=neg)
    return torch.maximum(neg.exp_().sub_(1.0), x, out=out)


class LeakyReLU(nn.LeakyReLU, Activation):
    """LeakyReLU, slope 0.1 by default as in HiFi-GAN's generator."""

    def __init__(self, negative_slope: float = 0.1, inplace: bool = False) -> None:
        super().__init__(negative_slope, inplace=inplace)

    def activate(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        out = torch.empty_like(x) if out is None else out
        return torch.ops.aten.leaky_relu.out(x, self.negative_slope, out=out)


class _SnakeFunction(torch.autograd.Function):
    """``x + sin^2(a x) / a`` with a hand-written backward that keeps only ``x`` and ``a`` for it, where
    autograd keeps four tensors of ``x``'s size; 15 % faster forward + backward on CPU.

    dy/dx = 1 + sin(2 a x);  dy/da = (x sin(2 a x) - sin^2(a x) / a) / a  (a + 1e-9 for a, as in DAC).
    """

    @staticmethod
    def forward(ctx, x: Tensor, alpha: Tensor) -> Tensor:
        ctx.save_for_backward(x, alpha)
        return torch.addcmul(x, torch.mul(alpha, x).sin_().square_(), 1.0 / (alpha + 1e-9))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:
        x, alpha = ctx.saved_tensors
        ax = alpha * x
        sin2 = torch.sin(ax + ax)
        grad_x = torch.addcmul(grad, grad, sin2)
        grad_alpha = None
        if ctx.needs_input_grad[1]:
            inv = 1.0 / (alpha + 1e-9)
            d_alpha = torch.addcmul(x * sin2, ax.sin_().square_(), inv, value=-1.0).mul_(inv)
            dims = [i for i, n in enumerate(alpha.shape) if n == 1 and x.shape[i] != 1]
            grad_alpha = (grad * d_alpha).sum(dims, keepdim=True)
        return grad_x, grad_alpha


class Snake(Activation):
    """x + sin^2(alpha x) / alpha with a learned per-channel alpha (Ziyin et al. 2020; used in DAC)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return _SnakeFunction.apply(x, self.alpha)

    def activate(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """In row blocks of about 1 MiB through one scratch buffer, three in-place passes and a fused
        ``addcmul``: 30 % faster than the expression in ``forward`` over a 10 s decode's activations."""
        out = torch.empty_like(x) if out is None else out
        alpha = self.alpha.reshape(-1)  # (1, C, 1) -> per channel, the last dim here
        inv = 1.0 / (alpha + 1e-9)
        rows = _block_rows(x)
        scratch = x.new_empty(x.shape[0], rows, x.shape[2])
        for block, into in zip(x.split(rows, 1), out.split(rows, 1), strict=True):
            s = scratch[:, : block.shape[1]]
            torch.mul(block, alpha, out=s).sin_().square_()
            torch.addcmul(block, s, inv, out=into)
        return out

    def foldable(self) -> bool:
        """Whether the next layer may take :meth:`scaled` and fold ``1 / alpha`` into its weights: in float32
        (or narrower) with every ``|alpha|`` at least ``FOLD_MIN_ALPHA``, where the folded form equals
        :meth:`activate` to rounding (it leaves out the 1e-9 that DAC adds to alpha in the divisor: 1e-8 of a
        value there, under float32's 6e-8); float64 keeps the exact form."""
        alpha = self.alpha.detach()
        return alpha.dtype != torch.float64 and bool(alpha.abs().min() >= FOLD_MIN_ALPHA)

    def scaled(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """``alpha * self(x) = z + sin^2(z)`` with ``z = alpha x``, for ``(B, T, C)`` ``x``, into ``out`` (may be
        ``x``) or a new tensor: three passes in row blocks, where :meth:`activate` makes four, one of them a
        broadcast of ``1 / alpha`` that costs twice a plain one. A conv after it with its input channels'
        weights times ``1 / alpha`` computes the conv of ``self(x)``: zero in, zero out, so its zero padding
        is unchanged."""
        out = torch.empty_like(x) if out is None else out
        alpha = self.alpha.reshape(-1)
        rows = _block_rows(x)
        scratch = x.new_empty(x.shape[0], rows, x.shape[2])
        for block, z in zip(x.split(rows, 1), out.split(rows, 1), strict=True):
            s = scratch[:, : block.shape[1]]
            torch.mul(block, alpha, out=z)
            torch.sin(z, out=s)
            z.addcmul_(s, s)
        return out

    def input_scale(self) -> Tensor:
        """``(C,)``: what a conv after :meth:`scaled` multiplies its input channels' weights by."""
        return 1.0 / self.alpha.reshape(-1)


def activated(pre: Activation | None, h: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """The input and ``(C_out, C_in, k)`` weight with which a conv after ``pre`` computes ``conv(pre(h))``: a
    foldable Snake's :meth:`Snake.scaled` with ``weight`` times its :meth:`Snake.input_scale`, otherwise
    ``pre(h)`` (or ``h``) with ``weight``. ``h`` is not written."""
    if isinstance(pre, Snake) and pre.foldable():
        return pre.scaled(h), weight * pre.input_scale()[None, :, None]
    return (h if pre is None else pre.activate(h)), weight


def make_activation(kind: str, channels: int, inplace: bool = False) -> Activation:
    """``inplace`` only where the input is used by nothing else (ELU's backward reads its output)."""
    if kind == "elu":
        return ELU(inplace=inplace)
    if kind == "snake":
        return Snake(channels)
    if kind == "leaky_relu":
        return LeakyReLU(0.1, inplace=inplace)
    raise UserError(f"activation must be one of {ACTIVATIONS}, got {kind!r}")


def _gemm_into(out: Tensor, a: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
    """``out = a @ w + bias`` if ``bias`` is given, else ``out += a @ w``; ``out``, ``a``: ``(B, M, .)``."""
    for i in range(out.shape[0]):
        if bias is not None:
            torch.addmm(bias, a[i], w, out=out[i])
        else:
            out[i].addmm_(a[i], w)
    return out


def _padded(x: Tensor, act: Activation | None, left: int, length: int) -> Tensor:
    """``act(x)`` (or ``x``), ``(B, T, C)``, after ``left`` zero rows and before zero rows up to ``length`` rows."""
    b, t, c = x.shape
    buf = x.new_empty(b, max(length, left + t), c)
    buf[:, :left] = 0
    buf[:, left + t :] = 0
    if act is None:
        buf[:, left : left + t] = x
    else:
        act.activate(x, out=buf[:, left : left + t])
    return buf


class PaddedConv1d(TimeMajor):
    """Conv1d with the padding that keeps ``out_len = in_len / stride`` (for lengths divisible by stride).

    Total padding ``(k - 1) * d + 1 - s``: all on the left when causal, split as in EnCodec otherwise
    (left gets the odd sample). No input copy: the conv pads both sides by the left amount itself and
    the outputs past ``in_len / stride`` (which only the extra right padding produces) are dropped.
    Kernel 1 runs as one batched GEMM (PyTorch's CPU conv takes a slow im2col path for it).
    """

    overwrites_input = False

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        dilation: int = 1,
        causal: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)
        nn.init.zeros_(conv.bias)  # see _ZERO_BIAS
        self.conv = _weight_norm(conv) if weight_norm else conv
        total = (kernel - 1) * dilation + 1 - stride
        self.left = total if causal else total - total // 2

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv
        stride = conv.stride[0]
        if conv.kernel_size[0] == 1 and stride == 1:
            return torch.baddbmm(conv.bias[None, :, None], conv.weight[:, :, 0].expand(x.shape[0], -1, -1), x)
        y = F.conv1d(x, conv.weight, conv.bias, stride=stride, padding=self.left, dilation=conv.dilation)
        frames = x.shape[-1] // stride
        return y if y.shape[-1] == frames else y[..., :frames]

    def time_major_context(self) -> tuple[float, float, Fraction]:
        k, d, s = self.conv.kernel_size[0], self.conv.dilation[0], self.conv.stride[0]
        return float(self.left), float((k - 1) * d - self.left), Fraction(1, s)

    def time_major(self, h: Tensor, pre: Activation | None = None, valid: int | None = None) -> Tensor:
        """``(B, T, C_in)`` -> ``(B, T // stride, C_out)``; never writes ``h``."""
        conv = self.conv
        w, bias = conv.weight, conv.bias  # (C_out, C_in, k)
        cout, _, k = w.shape
        s, d = conv.stride[0], conv.dilation[0]
        frames = h.shape[1] // s
        if cout == 1 and not (k == 1 and s == 1):
            return self._to_one_channel(h, pre, frames)
        x, w = activated(pre, h, w)
        if k == 1 and s == 1:
            return _gemm_into(x.new_empty(x.shape[0], frames, cout), x, w[:, :, 0].t(), bias)
        # Channels-last view (B, C, 1, T) of the same memory: oneDNN's fast NHWC kernels, padding included.
        image = x.transpose(1, 2).unsqueeze(2)
        y = F.conv2d(image, w.unsqueeze(2), bias, stride=(1, s), padding=(0, self.left), dilation=(1, d))
        y = y.squeeze(2).transpose(1, 2)  # (B, T', C_out), contiguous when oneDNN kept channels-last
        return y[:, :frames].contiguous()

    def _to_one_channel(self, x: Tensor, pre: Activation | None, frames: int) -> Tensor:
        """A conv to one channel (the waveform): one GEMM ``(k, C) @ (C, T)`` for every tap at every row,
        2.5x faster than ``(T, C) @ (C, k)`` with its 7-wide output, then a shifted sum over taps."""
        conv = self.conv
        w, bias = conv.weight, conv.bias
        k = w.shape[-1]
        s, d = conv.stride[0], conv.dilation[0]
        last = (frames - 1) * s + 1  # rows spanned by one tap's strided view
        buf = _padded(x, pre, self.left, last + (k - 1) * d)
        taps = torch.matmul(w[0].t(), buf.transpose(1, 2))  # (B, k, T)
        out = taps[:, 0, 0:last:s].clone().add_(bias)  # out[f] = sum_j taps[j, f * s + j * d]
        for j in range(1, k):
            out.add_(taps[:, j, j * d : j * d + last : s])
        return out.unsqueeze(-1)


def conv_transpose_2s(x: Tensor, weight: Tensor, bias: Tensor, stride: int) -> Tensor:
    """``conv_transpose1d(x, weight, bias, stride)`` for kernel ``2 * stride``, as one GEMM and an overlap-add.

    Each input frame j emits ``2s`` samples per output channel; the first ``s`` land at ``j * s``, the
    second ``s`` overlap the next frame's first half. PyTorch's CPU transposed conv takes a col2im path
    several times slower than this.

    Args:
        x: ``(B, C_in, L)``.
        weight: ``(C_in, C_out, 2s)`` as in ``nn.ConvTranspose1d``.

    Returns:
        ``(B, C_out, (L + 1) * s)``.
    """
    b, cin, frames = x.shape
    cout = weight.shape[1]
    cols = torch.matmul(weight.reshape(cin, cout * 2 * stride).t(), x)  # (B, C_out * 2s, L)
    cols = cols.view(b, cout, 2, stride, frames).transpose(-1, -2)  # (B, C_out, 2, L, s)
    out = cols.new_empty(b, cout, frames + 1, stride)
    out[:, :, :frames] = cols[:, :, 0]
    out[:, :, frames] = 0
    out[:, :, 1:] += cols[:, :, 1]
    out += bias[None, :, None, None]
    return out.view(b, cout, (frames + 1) * stride)


def _cached(layer: nn.Module, build):
    """``build()``, kept on ``layer`` until any of its parameters moves or changes (in-place updates bump
    ``Tensor._version``; ``.to()`` and loading replace or copy into them)."""
    key = tuple((p.data_ptr(), p._version, p.dtype) for p in layer.parameters())
    hit = layer.__dict__.get("_time_major_cache")
    if hit is None or hit[0] != key:
        hit = (key, build())
        layer.__dict__["_time_major_cache"] = hit
    return hit[1]


class PaddedConvTranspose1d(TimeMajor):
    """ConvTranspose1d(kernel 2s, stride s) trimmed so ``out_len = in_len * s`` (right-trim when causal)."""

    def __init__(self, cin: int, cout: int, stride: int, causal: bool = False, weight_norm: bool = True) -> None:
        super().__init__()
        conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)
        nn.init.zeros_(conv.bias)  # see _ZERO_BIAS
        self.conv = _weight_norm(conv) if weight_norm else conv
        self.trim = (0, stride) if causal else (stride - stride // 2, stride // 2)

    def forward(self, x: Tensor) -> Tensor:
        y = conv_transpose_2s(x, self.conv.weight, self.conv.bias, self.conv.stride[0])
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]

    def time_major_context(self) -> tuple[float, float, Fraction]:
        # output row p reads input rows (p + trim) // s - 1 and (p + trim) // s
        s, trim = self.conv.stride[0], self.trim[0]
        return 1 + (s - 1 - trim) / s, trim / s, Fraction(s)

    def _halves(self) -> tuple[Tensor, Tensor, Tensor]:
        """The two ``(C_in, s * C_out)`` GEMM halves of the ``(C_in, C_out, 2s)`` weights and the bias per row:
        output row ``j * s + r``, channel ``o`` is ``x[j] @ w[:, o, r] + x[j - 1] @ w[:, o, s + r]``."""
        w, bias, s = self.conv.weight, self.conv.bias, self.conv.stride[0]
        cin, cout, _ = w.shape
        first = w[:, :, :s].transpose(1, 2).reshape(cin, s * cout)
        second = w[:, :, s:].transpose(1, 2).reshape(cin, s * cout)
        return first, second, bias.repeat(s)

    def time_major(self, h: Tensor, pre: Activation | None = None, valid: int | None = None) -> Tensor:
        """``(B, L, C_in)`` -> ``(B, L * s, C_out)``."""
        if pre is not None:
            h = pre.activate(h, out=h)
        s = self.conv.stride[0]
        first, second, bias = _cached(self, self._halves)
        b, frames, _ = h.shape
        cout = bias.shape[0] // s
        out = h.new_empty(b, frames + 1, s * cout)
        _gemm_into(out[:, :frames], h, first, bias)
        out[:, frames] = bias
        _gemm_into(out[:, 1:], h, second, None)
        left, right = self.trim
        return out.view(b, (frames + 1) * s, cout)[:, left : (frames + 1) * s - right]


class ResidualUnit(TimeMajor):
    """act -> dilated conv (k=kernel, C -> C/2) -> act -> conv (k=out_kernel, C/2 -> C), plus the input.

    ``out_kernel`` 1 is SEANet's; time-major, that 1x1 conv then accumulates into the input in place.
    """

    def __init__(
        self,
        channels: int,
        dilation: int,
        kernel: int,
        act: str,
        causal: bool,
        weight_norm: bool,
        out_kernel: int = 1,
    ) -> None:
        super().__init__()
        hidden = max(channels // 2, 1)
        self.block = nn.Sequential(
            make_activation(act, channels),
            PaddedConv1d(channels, hidden, kernel, dilation=dilation, causal=causal, weight_norm=weight_norm),
            make_activation(act, hidden, inplace=True),
            PaddedConv1d(hidden, channels, out_kernel, causal=causal, weight_norm=weight_norm),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x).add_(x)  # the last conv's output is not needed by its backward

    def time_major_parts(self) -> tuple[nn.Module, ...]:
        return tuple(self.block)

    def time_major_context(self) -> tuple[float, float, Fraction]:
        left = right = 0.0
        for part in self.block:
            if isinstance(part, TimeMajor):
                lo, hi, rate = part.time_major_context()
                if rate != 1:
                    raise ValueError(f"ResidualUnit: {type(part).__name__} changes the length (rate {rate})")
                left, right = left + lo, right + hi
        return left, right, Fraction(1)

    def time_major(self, h: Tensor, pre: Activation | None = None, valid: int | None = None) -> Tensor:
        if pre is not None:
            h = pre.activate(h, out=h)
        *inner, last = self.block
        # The inner layers must leave h intact: an activation fused into a conv that never writes its input does.
        safe = len(inner) >= 2 and isinstance(inner[0], Activation) and not inner[1].overwrites_input
        conv = last.conv if isinstance(last, PaddedConv1d) else None
        pointwise = conv is not None and conv.kernel_size[0] == 1 and conv.stride[0] == 1
        fold = pointwise and isinstance(inner[-1], Snake) and inner[-1].foldable()
        hidden, _ = run_time_major(inner[:-1] if fold else inner, h if safe else h.clone(), valid)
        if not pointwise:
            return h.add_(last.time_major(hidden, None, valid))
        w = conv.weight
        if fold:  # the Snake in place as Snake.scaled, its 1 / alpha in the 1x1 conv's weights
            hidden = inner[-1].scaled(hidden, out=hidden)
            w = w * inner[-1].input_scale()[None, :, None]
        w, bias = w[:, :, 0].t(), conv.bias
        rows = max(1, BLOCK // h.shape[2])  # the bias add then reads each block of the GEMM's output from cache
        for i in range(h.shape[0]):
            for block, x in zip(h[i].split(rows), hidden[i].split(rows), strict=True):
                block.addmm_(x, w).add_(bias)
        return h


def receptive_field(module: nn.Module) -> int:
    """Input samples that can influence one output frame (sum over convs of (k - 1) * d * input hop)."""
    rf, jump = 1, 1
    for m in module.modules():
        if isinstance(m, nn.Conv1d):
            rf += (m.kernel_size[0] - 1) * m.dilation[0] * jump
            jump *= m.stride[0]
    return rf


def describe_missing_fast_path(layers) -> str | None:
    """The first layer of ``layers`` without a trustworthy ``time_major``, as text; ``None`` if all have one."""
    for i, layer in enumerate(layers):
        if not has_fast_path(layer):
            return f"layer {i} ({type(layer).__name__})"
    return None


__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ELU",
    "LeakyReLU",
    "PaddedConv1d",
    "PaddedConvTranspose1d",
    "ResidualUnit",
    "Snake",
    "TimeMajor",
    "conv_transpose_2s",
    "has_fast_path",
    "make_activation",
    "receptive_field",
    "run_time_major",
]
