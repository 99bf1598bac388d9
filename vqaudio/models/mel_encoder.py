"""A frame-rate encoder: log-mel frames -> ConvNeXt blocks -> latents, the mirror of the iSTFT decoder.

Waveform ``(B, 1, T)`` with ``T`` a multiple of ``hop`` -> Hann frames of ``n_fft = 4 * hop``, one per hop, centred
on the first sample of their hop as ``torch.stft(center=True)`` frames them (causal: ending at their hop's end;
zeros beyond the ends in both) -> log10 mel magnitudes
-> an embedding conv -> ConvNeXt blocks at the frame rate -> a 1x1 conv to ``latent_dim`` -> ``(B, D, T / hop)``.
Nothing runs at the sample rate but one FFT per frame, where the SEANet encoder runs its convs over every
sample; Vocos (Siuzdak 2023) feeds the same backbone the same features on the decoding side.

Under ONNX export the DFT is two matmuls with a fixed cosine and sine basis, as the inverse STFT does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..features import slaney_mel_filters
from .istft import ChannelNorm, ConvNeXtBlock, FrameConv, _init_weights, init_layer_states, step_layers

# Floor of the mel magnitudes before the log, as vqaudio.features.MelSpectrogram clamps.
MEL_FLOOR = 1e-5


class LogMelFrames(nn.Module):
    """``(B, 1, T)`` -> ``(B, n_mels, T / hop)``: log10 Slaney mel magnitudes (librosa's filters) of periodic-Hann
    frames of ``n_fft = 4 * hop``; frame ``t`` spans ``[t * hop - n_fft / 2, t * hop + n_fft / 2)``, or
    ``[(t + 1) * hop - n_fft, (t + 1) * hop)`` when ``causal``, zeros beyond the ends.

    Stream state: the last ``n_fft - hop`` input samples (zeros before the first chunk).
    """

    def __init__(self, sample_rate: int, hop: int, n_mels: int, causal: bool) -> None:
        super().__init__()
        self.hop, self.n_fft, self.causal = hop, 4 * hop, causal
        total = self.n_fft - hop
        self.pad = (total, 0) if causal else (self.n_fft // 2, total - self.n_fft // 2)
        filters = slaney_mel_filters(sample_rate, self.n_fft, n_mels)
        self.register_buffer("filters", torch.from_numpy(filters).float().T.contiguous(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    def _log_mel(self, frames: Tensor) -> Tensor:
        """``(B, T', n_fft)`` samples -> ``(B, n_mels, T')``."""
        frames = frames * self.window.to(frames.dtype)
        if torch.onnx.is_in_onnx_export():
            cos, sin = self._basis(frames.dtype, frames.device)
            mag = torch.sqrt((frames @ cos).square() + (frames @ sin).square())
        else:
            mag = torch.fft.rfft(frames, dim=-1).abs()
        mel = mag @ self.filters.to(mag.dtype)  # (B, T', n_mels)
        return torch.log10(mel.clamp_min(MEL_FLOOR)).transpose(1, 2)

    def _basis(self, dtype, device) -> tuple[Tensor, Tensor]:
        """The real DFT as two ``(n_fft, n_fft / 2 + 1)`` matrices (the sign of the sine part is lost in the
        magnitude)."""
        n = self.n_fft
        angle = 2 * math.pi * torch.outer(torch.arange(n, dtype=torch.float64), torch.arange(n // 2 + 1)) / n
        return torch.cos(angle).to(device=device, dtype=dtype), torch.sin(angle).to(device=device, dtype=dtype)

    def _frames(self, padded: Tensor) -> Tensor:
        """``(B, (T' + 3) * hop)`` -> ``(B, T', n_fft)``: each frame is four consecutive hops (a reshape and four
        slices: ``unfold`` has no ONNX export at dynamic lengths)."""
        hops = padded.reshape(padded.shape[0], -1, self.hop)
        n = hops.shape[1] - 3
        return torch.cat([hops[:, j : n + j] for j in range(4)], dim=-1)

    def forward(self, wav: Tensor) -> Tensor:
        return self._log_mel(self._frames(F.pad(wav[:, 0], self.pad)))

    def init_state(self, batch: int, device, dtype) -> Tensor:
        return torch.zeros(batch, self.pad[0], device=device, dtype=dtype)

    def step(self, wav: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        full = torch.cat([state, wav[:, 0]], dim=-1)
        return self._log_mel(self._frames(full)), full[:, full.shape[-1] - self.pad[0] :]


class MelEncoder(nn.Module):
    """Waveform ``(B, 1, T)`` with ``T`` a multiple of ``hop_length`` -> latents ``(B, latent_dim, T / hop)``
    through log-mel frames and ConvNeXt blocks at the frame rate (see the module docstring). The interface of
    :class:`vqaudio.models.seanet.Encoder` that the codec uses: ``forward``, ``infer``, ``receptive_field``,
    ``frame_context``, and ``init_state``/``step`` for streaming (causal).

    Args:
        sample_rate: Hz; hop_length: samples per latent frame (``n_fft = 4 * hop_length``).
        latent_dim: channels D of the latents.
        dim, blocks, kernel: the ConvNeXt backbone's width, block count and depthwise kernel (and the embedding
            conv's kernel); each block's pointwise MLP is ``3 * dim`` wide (Vocos).
        n_mels: mel bands.
        causal: frames that end at their hop and left padding only, for streaming.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        hop_length: int = 320,
        latent_dim: int = 128,
        dim: int = 256,
        blocks: int = 4,
        kernel: int = 7,
        n_mels: int = 80,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.hop_length = self.frame_rows = int(hop_length)
        self.in_channels, self.causal = 1, causal
        self.blocks, self.kernel = blocks, kernel
        self.net = nn.Sequential(
            LogMelFrames(sample_rate, self.hop_length, n_mels, causal),
            FrameConv(n_mels, dim, kernel, causal),
            ChannelNorm(dim),
            *(ConvNeXtBlock(dim, 3 * dim, kernel, 1.0 / blocks, causal) for _ in range(blocks)),
            ChannelNorm(dim),
            FrameConv(dim, latent_dim, 1, causal),
        )
        self.net.apply(_init_weights)

    @property
    def receptive_field(self) -> int:
        """Input samples that can influence one output frame: one FFT frame and the convs' reach in hops."""
        return 4 * self.hop_length + (self.kernel - 1) * (self.blocks + 1) * self.hop_length

    def frame_context(self) -> tuple[int, int]:
        """Frames of the hop grid left and right of a frame that its latent depends on."""
        convs = self.blocks + 1  # the embedding conv and the blocks' depthwise convs, each padded as FrameConv pads
        before, hop = self.net[0].pad[0], self.hop_length
        frame = (-(-before // hop), -(-(4 * hop - before - hop) // hop))  # hops a log-mel frame reaches
        if self.causal:
            return frame[0] + (self.kernel - 1) * convs, frame[1]
        half = (self.kernel - 1) // 2
        return frame[0] + half * convs, frame[1] + (self.kernel - 1 - half) * convs

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[1] != 1:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"MelEncoder: expected (B, 1, T), got {shape}")
        if x.shape[-1] == 0 or x.shape[-1] % self.hop_length:
            raise ValueError(f"MelEncoder: length {x.shape[-1]} must be a positive multiple of {self.hop_length}")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        return self.net(x)

    def infer(self, x: Tensor) -> Tensor:
        """``forward(x)`` without autograd (every layer is an FFT or a GEMM at the frame rate)."""
        self._check(x)
        with torch.no_grad():
            return self.net(x)

    def init_state(self, batch: int) -> list:
        """The stream state before any sample: the frame tail and each framed conv's last inputs."""
        if not self.causal:
            raise ValueError("streaming needs a causal codec (model.causal: true); this one pads on both sides")
        return init_layer_states(self.net, batch)

    def step(self, x: Tensor, states: list) -> tuple[Tensor, list]:
        """One chunk ``(B, 1, k * hop)`` -> ``(B, D, k)`` and the new state (``states`` unchanged)."""
        return step_layers(self.net, x, states)
