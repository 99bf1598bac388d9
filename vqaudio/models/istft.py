"""A frame-rate decoder that ends in an inverse STFT (Vocos, Siuzdak 2023; as the codec decoder of WavTokenizer
and X-codec 2).

Latents ``(B, D, T')`` -> embedding conv -> ConvNeXt blocks at the latent frame rate -> a Linear head to
log-magnitude and phase of ``n_fft / 2 + 1`` bins per frame -> inverse STFT with ``hop`` = the codec's hop and
``n_fft = 4 * hop`` -> waveform ``(B, 1, T' * hop)``. Every layer runs at the frame rate; only the inverse FFT
and the overlap-add touch samples, so the decoder costs a fraction of a SEANet decoder's transposed convs.

Choices and their sources:

* ConvNeXt block (Liu et al. 2022, as Vocos uses it): depthwise conv (kernel 7) -> LayerNorm -> Linear to 3x
  width -> GELU -> Linear back -> layer scale -> residual; layer scale starts at ``1 / blocks`` and weights at
  a truncated normal of std 0.02 with zero biases, as Vocos initialises them.
* Head (Vocos): magnitude ``exp(x)`` clipped at 100, the phase output used as the angle (Vocos found this
  better than predicting real and imaginary parts).
* Inverse STFT: ``irfft`` of each frame times a periodic Hann window, overlap-added and divided by the
  window's squared-sum envelope (1.5 for Hann at ``hop = n_fft / 4``), as ``torch.istft`` computes it in
  steady state. The envelope is the constant, not the per-sample sum, so the edges need no special case and a
  stream's state is just the overlap-add tail. Under ONNX export the ``irfft`` is the same sum written as two
  matmuls with a fixed cosine and sine basis (ONNX Runtime has no inverse STFT), and the overlap-add is a sum
  of shifted frame quarters (no scatter).
* Alignment: non-causal, frame ``t`` is centred on its hop (the samples ``[t * hop, (t + 1) * hop)``); causal,
  frame ``t`` starts at sample ``t * hop``, so output sample ``n`` sees frames ``<= n // hop`` and a stream
  carries the ``n_fft - hop`` samples of tail that later frames complete (streaming equals offline, tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError

# Magnitude clip of the head, Vocos' ``torch.clip(mag, max=1e2)``: log(100).
LOG_MAG_MAX = math.log(100.0)


def _init_weights(module: nn.Module) -> None:
    """Vocos' init: truncated normal (std 0.02) weights and zero biases for every conv and Linear."""
    if isinstance(module, (nn.Conv1d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class FrameConv(nn.Module):
    """A 1-D conv over frames, ``(B, C, T) -> (B, C', T)``: same padding, or left padding only when ``causal``.

    Stream state: the last ``kernel - 1`` input frames (zeros before the first chunk: the causal padding).
    """

    def __init__(self, cin: int, cout: int, kernel: int, causal: bool, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, groups=groups)
        self.causal = causal
        total = kernel - 1
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))

    def init_state(self, batch: int, device, dtype) -> Tensor:
        return torch.zeros(batch, self.conv.in_channels, self.pad[0], device=device, dtype=dtype)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        full = torch.cat([state, x], dim=-1)
        return self.conv(full), full[..., full.shape[-1] - self.pad[0] :]


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of ``(B, C, T)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class ConvNeXtBlock(nn.Module):
    """``(B, C, T) -> (B, C, T)``: depthwise conv, LayerNorm, Linear (C -> hidden), GELU, Linear (hidden -> C),
    layer scale, residual.

    Args:
        dim: channels C; hidden: width of the pointwise MLP; kernel: of the depthwise conv;
        layer_scale: initial value of the per-channel output scale; causal: left padding only.
    """

    def __init__(self, dim: int, hidden: int, kernel: int, layer_scale: float, causal: bool) -> None:
        super().__init__()
        self.dwconv = FrameConv(dim, dim, kernel, causal, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale)))

    def _mlp(self, h: Tensor) -> Tensor:
        h = self.norm(h.transpose(1, 2))  # (B, T, C)
        h = self.pwconv2(F.gelu(self.pwconv1(h))) * self.gamma
        return h.transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self._mlp(self.dwconv(x))

    def init_state(self, batch: int, device, dtype) -> Tensor:
        return self.dwconv.init_state(batch, device, dtype)

    def step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        h, state = self.dwconv.step(x, state)
        return x + self._mlp(h), state


class SpectralHead(nn.Module):
    """``(B, C, T) -> (B, 2, n_fft / 2 + 1, T)``: real and imaginary parts of each frame's spectrum, from a Linear
    layer's log-magnitude (clipped at log 100) and phase."""

    def __init__(self, dim: int, n_fft: int) -> None:
        super().__init__()
        self.bins = n_fft // 2 + 1
        self.out = nn.Linear(dim, 2 * self.bins)

    def polar(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, C, T)`` -> magnitude and phase, each ``(B, T, K)``."""
        log_mag, phase = self.out(x.transpose(1, 2)).split(self.bins, dim=-1)
        return torch.exp(log_mag.clamp(max=LOG_MAG_MAX)), phase

    @staticmethod
    def spectrum(mag: Tensor, phase: Tensor) -> Tensor:
        """Magnitude and phase ``(B, T, K)`` -> ``(B, 2, K, T)`` real and imaginary parts."""
        return torch.stack([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1).transpose(2, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.spectrum(*self.polar(x))


class InverseSTFT(nn.Module):
    """Spectra ``(B, 2, n_fft / 2 + 1, T)`` (real, imaginary) -> waveform ``(B, 1, T * hop)``.

    Args:
        n_fft: FFT size, a whole multiple of ``hop``.
        hop: samples between frames.
        causal: frame ``t`` starts at sample ``t * hop`` (else it is centred on ``[t * hop, (t + 1) * hop)``).
    """

    def __init__(self, n_fft: int, hop: int, causal: bool) -> None:
        super().__init__()
        if n_fft % hop or n_fft < hop:
            raise UserError(f"n_fft ({n_fft}) must be a whole multiple of hop ({hop})")
        self.n_fft, self.hop, self.causal = n_fft, hop, causal
        self.overlap = n_fft // hop
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        envelope = window.pow(2).reshape(self.overlap, hop).sum(0).mean()
        self.register_buffer("window", (window / envelope).float(), persistent=False)
        # The centred alignment drops (n_fft - hop) / 2 samples of overlap-add on the left (rounded down).
        self.shift = 0 if causal else (n_fft - hop) // 2

    def frames(self, spec: Tensor) -> Tensor:
        """``(B, 2, K, T) -> (B, T, n_fft)``: each frame's inverse DFT, windowed and scaled."""
        re, im = spec[:, 0].transpose(1, 2), spec[:, 1].transpose(1, 2)  # (B, T, K)
        if torch.onnx.is_in_onnx_export():
            cos, sin = self._basis(spec.dtype, spec.device)
            return re @ cos + im @ sin
        return torch.fft.irfft(torch.complex(re, im), n=self.n_fft, dim=-1) * self.window

    def _basis(self, dtype, device) -> tuple[Tensor, Tensor]:
        """``irfft`` times the window as two ``(K, n_fft)`` matrices: x[n] = sum_k c_k (Re X_k cos - Im X_k sin)
        (2 pi k n / N) / N, with c_k = 1 for k = 0 and N / 2 (whose imaginary parts irfft ignores), else 2."""
        n, k = self.n_fft, self.n_fft // 2 + 1
        angle = 2 * math.pi * torch.outer(torch.arange(k, dtype=torch.float64), torch.arange(n, dtype=torch.float64))
        weight = torch.full((k, 1), 2.0, dtype=torch.float64)
        weight[0] = 1.0
        if n % 2 == 0:
            weight[-1] = 1.0
        scale = weight / n * self.window.double()
        cos = torch.cos(angle / n) * scale
        sin = -torch.sin(angle / n) * scale
        sin[0] = 0.0
        if n % 2 == 0:
            sin[-1] = 0.0
        return cos.to(device=device, dtype=dtype), sin.to(device=device, dtype=dtype)

    def overlap_add(self, frames: Tensor) -> Tensor:
        """``(B, T, n_fft) -> (B, (T + overlap - 1) * hop)``: frame t added at sample ``t * hop``."""
        b, t, _ = frames.shape
        parts = frames.reshape(b, t, self.overlap, self.hop)
        r = self.overlap
        total = sum(F.pad(parts[:, :, j], (0, 0, j, r - 1 - j)) for j in range(r))  # (B, T + r - 1, hop)
        return total.reshape(b, -1)

    def forward(self, spec: Tensor) -> Tensor:
        t = spec.shape[-1]
        y = self.overlap_add(self.frames(spec))
        return y[:, None, self.shift : self.shift + t * self.hop]

    def init_state(self, batch: int, device, dtype) -> Tensor:
        if not self.causal:
            raise ValueError("streaming needs a causal codec (model.causal: true); this one pads on both sides")
        return torch.zeros(batch, self.n_fft - self.hop, device=device, dtype=dtype)

    def step(self, spec: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        t = spec.shape[-1]
        y = self.overlap_add(self.frames(spec))
        y = torch.cat([y[:, : tail.shape[-1]] + tail, y[:, tail.shape[-1] :]], dim=-1)
        return y[:, None, : t * self.hop], y[:, t * self.hop :]


class IstftDecoder(nn.Module):
    """Latents ``(B, latent_dim, T')`` -> waveform ``(B, 1, T' * hop)`` through ConvNeXt blocks at the frame rate
    and an inverse STFT (see the module docstring). The same interface as :class:`vqaudio.models.seanet.Decoder`:
    ``forward`` (training), ``infer`` (inference without autograd), ``init_state``/``step`` (streaming, causal).

    Args:
        hop_length: samples per latent frame (the codec's hop); ``n_fft = 4 * hop_length``.
        latent_dim: channels D of the latents.
        dim: width of the ConvNeXt backbone.
        blocks: ConvNeXt blocks.
        hidden: width of each block's pointwise MLP; ``None`` means ``3 * dim`` (Vocos).
        kernel: kernel of the embedding conv and of each block's depthwise conv.
        causal: left padding only and frames that start at their hop, for streaming.
    """

    def __init__(
        self,
        hop_length: int = 320,
        latent_dim: int = 128,
        dim: int = 256,
        blocks: int = 6,
        hidden: int | None = None,
        kernel: int = 7,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.hop_length, self.in_channels = int(hop_length), int(latent_dim)
        self.n_fft = 4 * self.hop_length
        hidden = 3 * dim if hidden is None else hidden
        self.net = nn.Sequential(
            FrameConv(latent_dim, dim, kernel, causal),
            ChannelNorm(dim),
            *(ConvNeXtBlock(dim, hidden, kernel, 1.0 / blocks, causal) for _ in range(blocks)),
            ChannelNorm(dim),
            SpectralHead(dim, self.n_fft),
            InverseSTFT(self.n_fft, self.hop_length, causal),
        )
        self.net.apply(_init_weights)

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[1] != self.in_channels or x.shape[-1] == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: expected (B, {self.in_channels}, T) with T >= 1, got {shape}")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.net(x)

    def forward_with_phase(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` that also returns the head's phase ``(B, n_fft / 2 + 1, T')``, which the phase losses
        (:func:`vqaudio.train.losses.phase_loss`) compare with :meth:`frame_phase` of the target."""
        self._check(x)
        head, istft = self.net[-2], self.net[-1]
        mag, phase = head.polar(self.net[:-2](x))
        return istft(head.spectrum(mag, phase)), phase.transpose(1, 2)

    def frame_phase(self, wav: Tensor) -> Tensor:
        """``(B, 1, T)`` -> ``(B, n_fft / 2 + 1, ceil(T / hop))``: the phase of a Hann STFT framed as this decoder's
        frames (frame ``t`` centred on ``[t * hop, (t + 1) * hop)``, or starting at ``t * hop`` when causal),
        zeros beyond both ends; what :meth:`forward_with_phase`'s phase should be for the output ``wav``."""
        istft = self.net[-1]
        frames = -(-wav.shape[-1] // self.hop_length)
        padded = F.pad(wav[:, 0], (istft.shift, self.n_fft))
        windows = padded.unfold(-1, self.n_fft, self.hop_length)[:, :frames]  # (B, T', n_fft)
        window = torch.hann_window(self.n_fft, periodic=True, device=wav.device, dtype=wav.dtype)
        return torch.fft.rfft(windows * window, dim=-1).angle().transpose(1, 2)

    def infer(self, x: Tensor) -> Tensor:
        """``forward(x)`` without autograd (every layer is already a GEMM or an FFT at the frame rate: the SEANet
        stacks' time-major windows have nothing to add here)."""
        self._check(x)
        with torch.no_grad():
            return self.net(x)

    def init_state(self, batch: int) -> list:
        """The stream state before any frame: each framed conv's last inputs and the inverse STFT's tail."""
        return init_layer_states(self.net, batch)  # a non-causal inverse STFT refuses (InverseSTFT.init_state)

    def step(self, x: Tensor, states: list) -> tuple[Tensor, list]:
        """One chunk of frames ``(B, D, k)`` -> ``(B, 1, k * hop)`` and the new state (``states`` unchanged)."""
        return step_layers(self.net, x, states)


def init_layer_states(net: nn.Sequential, batch: int) -> list:
    """Each layer's stream state before any input (``layer.init_state``), ``None`` for stateless layers."""
    param = next(net.parameters())
    return [
        layer.init_state(batch, param.device, param.dtype) if hasattr(layer, "init_state") else None for layer in net
    ]


def step_layers(net: nn.Sequential, x: Tensor, states: list) -> tuple[Tensor, list]:
    """One chunk through every layer of ``net`` with its state from :func:`init_layer_states`: the output and the
    new states (``states`` unchanged)."""
    new = []
    for layer, state in zip(net, states, strict=True):
        if state is None:
            x = layer(x)
        else:
            x, state = layer.step(x, state)
        new.append(state)
    return x, new
