"""The codec: SEANet encoder + any quantizer + an iSTFT or SEANet decoder, with a self-describing checkpoint format."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import check_state, load_model, save_model
from ..config import from_dict, to_dict
from ..errors import UserError
from ..quantize import QuantizerConfig, build_quantizer
from .context import LatentLSTM, LSTMState, length_groups
from .decoders import (
    build_decoder,
    check_decoder_kind,
    convnext_parameters,
    decode_with_phase,
    istft_options,
    istft_parameters,
)
from .mel_encoder import MelEncoder
from .seanet import Encoder

log = logging.getLogger(__name__)


@dataclass
class CodecConfig:
    """Architecture of a codec. ``CodecConfig()`` is the default 16 kHz speech model (50 frames/s).

    Attributes:
        sample_rate: waveform sample rate in Hz.
        channels: decoder width at the waveform end; doubled at each stride, capped at ``max_channels``.
        encoder_channels: encoder width at the waveform end; ``None`` means ``channels``. The default
            encoder is half as wide as the decoder: encoding is the hot path (unit extraction over
            thousands of hours) while resynthesis quality rests mostly on the decoder.
        strides: encoder downsampling factors; hop = prod(strides) = 320 samples by default.
        latent_dim: latent channels D.
        kernel: kernel of the first/last convs; residual_kernel: of the dilated convs.
        residual_out_kernel: kernel of the residual units' second conv (1 in SEANet).
        dilations: dilations of the residual units at each resolution; the default is one unit of dilation
            1 per resolution, as SEANet has, with the LSTMs below for long context (at equal training time
            it beat three units of dilations 1, 3, 9 without LSTMs, see ``lstm``).
        activation: ``"snake"`` (DAC's periodic ``x + sin^2(alpha x) / alpha``, the default: with three
            residual units per resolution and at equal training time it reached STOI 0.689 against ELU's
            0.615, at 1.6 % more log-mel distance and slower CPU decoding, see benchmarks/README.md),
            ``"elu"`` or ``"leaky_relu"`` (slope 0.1).
        causal: left padding only, for streaming.
        lstm: layers of a unidirectional LSTM (with a skip connection) on the latents after the encoder and
            before the decoder, as EnCodec has; 0 for none (see :mod:`vqaudio.models.context`). The default is
            2 layers with one residual unit per resolution: with the SEANet decoder and 512 units it reached
            at 20 minutes of CPU training STOI 0.727 (two seeds) against 0.691 for three units without LSTMs.
        lstm_dim: units per LSTM layer; ``None`` (the default) means ``latent_dim`` (128), with no output map,
            as EnCodec's SLSTM; a wider LSTM maps its outputs back to ``latent_dim``. With the iSTFT decoder and
            60 min of CPU training, 128 units matched 512 at 1 kbps (log-mel 0.373 against 0.380, STOI 0.770
            against 0.769, level-0 PNMI 0.483 against 0.473) with 3.2M fewer parameters and 4.5x faster
            single-waveform encoding; a second seed, side by side, had them within noise of each other too
            (benchmarks/README.md, what the encoder's latent LSTM buys).
        decoder_lstm: whether the decoder side has its LSTM (``lstm`` layers) too; off (the default), only the
            encoder has one. The iSTFT decoder's ConvNeXt blocks see +-21 frames on their own, and a 512-unit LSTM
            costs five times that decoder's whole inference on one thread. Files written before this field
            existed have it on.
        weight_norm: weight normalisation on every conv.
        quantizer: see :class:`vqaudio.quantize.QuantizerConfig`.
        content_objective: what trained level 0 besides reconstruction: ``"none"``, ``"ctc"`` or ``"kmeans"``
            (recorded by ``train-codec``; it changes nothing at inference).
        decoder: ``"istft"`` (the default: ConvNeXt blocks at the frame rate and an inverse STFT,
            :mod:`vqaudio.models.istft`) or ``"seanet"`` (the mirror of the encoder, transposed convs up to the
            sample rate). At equal CPU training time the iSTFT decoder made more intelligible speech than SEANet's
            at every bitrate and decodes several times faster (benchmarks/README.md). Model files written before
            this field existed are SEANet.
        decoder_dim, decoder_blocks, decoder_hidden, decoder_kernel: ``istft``: the backbone's width, ConvNeXt
            blocks, pointwise MLP width (``None``: 3 x ``decoder_dim``) and depthwise kernel. ``channels``,
            ``kernel``, ``dilations`` and the other conv fields then shape the encoder only.
        encoder: ``"mel"`` (the default: log-mel frames and ConvNeXt blocks at the frame rate,
            :mod:`vqaudio.models.mel_encoder`, the iSTFT decoder's mirror; ``channels``, ``kernel`` and the other
            conv fields then shape only a SEANet decoder) or ``"seanet"`` (strided convs over the waveform,
            :class:`~.seanet.Encoder`). At 60 minutes of CPU training the mel encoder made 2.1x the updates and
            reached at 1 kbps log-mel 0.356, STOI 0.805 and PESQ 1.37 against 0.373, 0.770 and 1.14 with the
            SEANet encoder, and the residual levels began to pay (STOI 0.858 at 4 kbps against 0.780); it
            encodes 2.0x faster on one thread (benchmarks/README.md). Model files written before this field
            existed are SEANet.
        encoder_dim, encoder_blocks, n_mels: ``mel``: the backbone's width and ConvNeXt blocks, and the mel bands.
    """

    sample_rate: int = 16000
    channels: int = 32
    encoder_channels: int | None = 16
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    latent_dim: int = 128
    kernel: int = 7
    residual_kernel: int = 3
    dilations: list[int] = field(default_factory=lambda: [1])
    activation: str = "snake"
    causal: bool = False
    weight_norm: bool = True
    max_channels: int = 512
    residual_out_kernel: int = 1
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    content_objective: str = "none"
    lstm: int = 2
    lstm_dim: int | None = None
    decoder_lstm: bool = False
    decoder: str = "istft"
    decoder_dim: int = 256
    decoder_blocks: int = 6
    decoder_hidden: int | None = None
    decoder_kernel: int = 7
    encoder: str = "mel"
    encoder_dim: int = 256
    encoder_blocks: int = 4
    n_mels: int = 80

    RANGES: ClassVar[dict[str, str]] = {
        "sample_rate": ">=1",
        "channels": ">=1",
        "encoder_channels": ">=1",
        "latent_dim": ">=1",
        "kernel": ">=1",
        "residual_kernel": ">=1",
        "dilations": ">=1",
        "max_channels": ">=1",
        "residual_out_kernel": ">=1",
        "lstm": ">=0",
        "lstm_dim": ">=1",
        "decoder_dim": ">=1",
        "decoder_blocks": ">=1",
        "decoder_hidden": ">=1",
        "decoder_kernel": ">=1",
        "encoder_dim": ">=1",
        "encoder_blocks": ">=1",
        "n_mels": ">=1",
    }


ENCODER_KINDS = ("seanet", "mel")


# The most weights a codec config may ask for (4 GiB of float32): a larger one is a typing slip (channels 1e6
# asks for 1.5e12), refused before anything is allocated.
MAX_PARAMETERS = 1 << 30
# Waveforms per padded batch of the convolutional encoder on a GPU (Codec.encode_batch with batch_convs).
CONV_BATCH = 64


def approx_parameters(config: CodecConfig) -> int:
    """About how many weights ``config`` builds (the convs and LSTMs; biases and Snake's alphas aside)."""
    strides, dil, k = config.strides, len(config.dilations), config.kernel
    rk, ok = config.residual_kernel, config.residual_out_kernel
    total = 0
    widths = [config.channels if config.encoder_channels is None else config.encoder_channels]
    if config.encoder == "mel":  # MelEncoder: its backbone (kernel 7, Vocos' MLP width) and a 1x1 conv out
        backbone = convnext_parameters(config.n_mels, config.encoder_dim, config.encoder_blocks, None, 7)
        total += backbone + config.encoder_dim * config.latent_dim
        widths = []
    if config.decoder == "istft":
        total += istft_parameters(
            config.latent_dim,
            config.decoder_dim,
            config.decoder_blocks,
            config.decoder_hidden,
            config.decoder_kernel,
            math.prod(config.strides),
        )
    else:
        widths.append(config.channels)
    for ch in widths:
        width = ch
        total += width * k  # the conv at the waveform end
        for s in strides:
            hidden = max(width // 2, 1)
            total += dil * (width * hidden * (rk + ok))
            out = min(2 * width, config.max_channels)
            total += width * out * 2 * s
            width = out
        total += width * config.latent_dim * max(3, k)
    if config.lstm:
        hidden = config.lstm_dim or config.latent_dim
        sides = 2 if config.decoder_lstm else 1
        total += sides * (
            config.lstm * 4 * hidden * (max(hidden, config.latent_dim) + hidden) + hidden * config.latent_dim
        )
    return total


@dataclass
class CodecOutput:
    """What ``Codec.forward`` returns.

    Attributes:
        wav: ``(B, 1, T)`` reconstruction, same length as the input.
        indices: ``(B, Q, T')`` (Q = 1 for a single quantizer); ``None`` when the pass skipped quantization.
        quantizer_loss: the quantizer's weighted loss (add it to the training objective).
        commitment, codebook: its named parts.
        metrics: the quantizer's metrics (perplexity, usage, per level for residual stacks).
        level0: ``(B, D, T')`` the first level's quantized latents (straight-through), what a content
            objective reads; the latents themselves when the pass skipped quantization.
        phase: ``(B, n_fft / 2 + 1, T')`` the iSTFT decoder's phase, what the phase losses read; ``None`` for
            a SEANet decoder.
    """

    wav: Tensor
    indices: Tensor | None
    quantizer_loss: Tensor
    commitment: Tensor
    codebook: Tensor
    metrics: dict[str, Tensor]
    level0: Tensor | None = None
    phase: Tensor | None = None


@dataclass
class StreamState:
    """Per-layer streaming state of a causal codec's encoder and decoder (see :mod:`vqaudio.models.streaming`)."""

    encoder: list
    decoder: list
    encoder_lstm: LSTMState | None = None
    decoder_lstm: LSTMState | None = None


@dataclass
class Stream:
    """A codec with its streaming state, from ``Codec.streaming()``."""

    codec: Codec
    state: StreamState

    def encode(self, wav: Tensor, n_q: int | None = None) -> Tensor:
        codes, self.state = self.codec.encode_step(wav, self.state, n_q=n_q)
        return codes

    def decode(self, codes: Tensor) -> Tensor:
        wav, self.state = self.codec.decode_step(codes, self.state)
        return wav


class Codec(nn.Module):
    """Waveform codec: ``encode(wav) -> indices``, ``decode(indices, length) -> wav``.

    Args:
        config: architecture; ``None`` builds the default 16 kHz speech codec.
    """

    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CodecConfig()
        check_decoder_kind(config.decoder, "codec config")
        if config.encoder not in ENCODER_KINDS:
            raise UserError(f"codec config.encoder must be one of {ENCODER_KINDS}, got {config.encoder!r}")
        size = approx_parameters(config)
        if size > MAX_PARAMETERS:
            raise UserError(
                f"codec config: about {size:.3g} weights ({size * 4 / 2**30:.3g} GiB), more than the "
                f"{MAX_PARAMETERS:.3g} "
                "a codec may have; check channels, encoder_channels, max_channels, latent_dim, lstm_dim and decoder_dim"
            )
        arch = dict(
            strides=config.strides,
            latent_dim=config.latent_dim,
            kernel=config.kernel,
            residual_kernel=config.residual_kernel,
            dilations=config.dilations,
            activation=config.activation,
            causal=config.causal,
            weight_norm=config.weight_norm,
            max_channels=config.max_channels,
            residual_out_kernel=config.residual_out_kernel,
        )
        enc_channels = config.channels if config.encoder_channels is None else config.encoder_channels
        if config.encoder == "mel":
            self.encoder = MelEncoder(
                config.sample_rate,
                math.prod(config.strides),
                config.latent_dim,
                config.encoder_dim,
                config.encoder_blocks,
                n_mels=config.n_mels,
                causal=config.causal,
            )
        else:
            self.encoder = Encoder(channels=enc_channels, **arch)
        self.quantizer = build_quantizer(config.quantizer, config.latent_dim)
        seanet = {k: v for k, v in arch.items() if k not in ("strides", "latent_dim", "causal")}
        self.decoder = build_decoder(
            config.decoder,
            strides=config.strides,
            latent_dim=config.latent_dim,
            causal=config.causal,
            seanet=dict(channels=config.channels, **seanet),
            istft=istft_options(config),
            where="codec config",
        )
        lstm = (config.latent_dim, config.lstm, config.lstm_dim)
        self.encoder_lstm = LatentLSTM(*lstm) if config.lstm else None
        self.decoder_lstm = LatentLSTM(*lstm) if config.lstm and config.decoder_lstm else None

    @classmethod
    def from_config(cls, config: CodecConfig | dict) -> Codec:
        """A codec from a :class:`CodecConfig` or a plain dict of its fields (nested ``quantizer`` dict)."""
        if isinstance(config, dict):
            config = from_dict(CodecConfig, config, where="codec config")
        return cls(config)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.encoder.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def n_q(self) -> int:
        """Residual depth Q: codes per frame (1 for a single quantizer)."""
        return self.quantizer.n_q

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def bitrate(self) -> float:
        """Bits per second at full depth."""
        return self.frame_rate * self.quantizer.bits_per_frame

    def num_frames(self, num_samples: int) -> int:
        """Frames for a waveform of ``num_samples``: ``ceil(num_samples / hop_length)`` (at least 1)."""
        return max(1, math.ceil(num_samples / self.hop_length))

    def _check_wav(self, wav: Tensor) -> Tensor:
        if not isinstance(wav, Tensor):
            raise ValueError(f"expected a waveform tensor (B, 1, T), got {type(wav).__name__}")
        if wav.ndim == 2:
            wav = wav[:, None]
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(
                f"expected a mono waveform of shape (B, 1, T) or (B, T), got {tuple(wav.shape)}; "
                "downmix multi-channel audio first (vqaudio.data.load_audio does)"
            )
        if wav.shape[-1] == 0:
            raise ValueError("expected at least one sample, got an empty waveform")
        if not wav.is_floating_point():
            raise ValueError(f"expected a float waveform in [-1, 1], got dtype {wav.dtype}; convert int PCM first")
        dtype = self._dtype()
        if wav.dtype != dtype:  # float64 is soundfile's default: read at any float precision, run at the model's
            wav = wav.to(dtype)
        if not bool(torch.isfinite(wav.sum())) and not bool(torch.isfinite(wav).all()):
            raise ValueError(f"waveform contains {int((~torch.isfinite(wav)).sum())} NaN/Inf sample(s)")
        return wav

    def _dtype(self) -> torch.dtype:
        param = next(self.parameters(), None)
        return torch.get_default_dtype() if param is None else param.dtype

    def _encoder_context(self, latents: Tensor) -> Tensor:
        return latents if self.encoder_lstm is None else self.encoder_lstm(latents)

    def _decoder_context(self, latents: Tensor) -> Tensor:
        return latents if self.decoder_lstm is None else self.decoder_lstm(latents)

    def _pad(self, wav: Tensor) -> Tensor:
        frames = self.num_frames(wav.shape[-1])
        return F.pad(wav, (0, frames * self.hop_length - wav.shape[-1]))

    def forward(self, wav: Tensor, quantize: bool = True) -> CodecOutput:
        """Training pass: ``(B, 1, T)`` -> :class:`CodecOutput` with a reconstruction of length T.

        Args:
            wav: mono waveform; ``(B, T)`` is accepted as mono.
            quantize: ``False`` passes the latents straight to the decoder (a continuous autoencoder, for
                the warm-up before ``loss.quantizer_start``): the quantizer is neither run nor updated,
                ``indices`` is ``None`` and the quantizer losses are zero.
        """
        wav = self._check_wav(wav)
        length = wav.shape[-1]
        latents = self._encoder_context(self.encoder(self._pad(wav)))
        if not quantize:
            zero = latents.new_zeros(())
            out, phase = decode_with_phase(self.decoder, self._decoder_context(latents))
            return CodecOutput(out[..., :length], None, zero, zero, zero, {}, latents, phase)
        q = self.quantizer(latents)
        out, phase = decode_with_phase(self.decoder, self._decoder_context(q.quantized))
        indices = q.indices if q.indices.ndim == 3 else q.indices[:, None]
        return CodecOutput(out[..., :length], indices, q.loss, q.commitment, q.codebook, q.metrics, q.first, phase)

    def level0(self, wav: Tensor, quantize: bool = True) -> Tensor:
        """``(B, 1, T)`` -> ``(B, D, T')``: the first level's quantized latents with straight-through gradients
        (the latents themselves when ``quantize`` is off), without touching any codebook state: what a
        content objective reads on batches that are not reconstructed."""
        latents = self._encoder_context(self.encoder(self._pad(self._check_wav(wav))))
        return self.quantizer.first_level(latents) if quantize else latents

    def _check_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= self.n_q:
            raise UserError(f"n_q must lie in [1, {self.n_q}] for this codec, got {n_q!r}")
        return n_q

    @torch.no_grad()
    def encode(self, wav: Tensor, n_q: int | None = None) -> Tensor:
        """``(B, 1, T)`` float waveform at ``sample_rate`` -> indices ``(B, n_q, ceil(T / hop))`` int64.

        Args:
            wav: mono waveform; ``(B, T)`` is accepted as mono.
            n_q: residual depth to keep, ``1 <= n_q <= self.n_q`` (default all).
        """
        wav = self._check_wav(wav)
        n_q = self._check_n_q(n_q)
        return self._codes(self._encoder_context(self.encoder.infer(self._pad(wav))), n_q)

    def _codes(self, latents: Tensor, n_q: int) -> Tensor:
        if self.n_q > 1:
            return self.quantizer.encode(latents, n_q=n_q)
        return self.quantizer.encode(latents)[:, None]

    def _latents(self, codes: Tensor) -> Tensor:
        """``(B, q, T')`` codes -> ``(B, D, T')`` quantized latents, the inverse of :meth:`_codes`."""
        return self.quantizer.decode(codes) if self.n_q > 1 else self.quantizer.decode(codes[:, 0])

    @torch.no_grad()
    def encode_chunked(self, wav: Tensor, chunk_seconds: float = 30.0, n_q: int | None = None) -> Tensor:
        """:meth:`encode` of a long ``(1, 1, T)`` waveform in chunks, with flat memory and the same result.

        Each chunk of frames is encoded with ``receptive_field`` samples of real audio on both sides (fewer
        at the file's edges, exactly as the whole-file encode sees them), and only its own frames are kept,
        so every frame sees the same input as in one pass; results agree with :meth:`encode` to float
        rounding (tested). With a latent LSTM the chunks' latents are joined and the LSTM runs over all the
        frames at once (it is cheap at the frame rate), so the result still equals :meth:`encode`.
        """
        wav = self._check_wav(wav)
        if wav.shape[0] != 1:
            raise ValueError(f"encode_chunked takes one waveform (1, 1, T), got batch {wav.shape[0]}")
        n_q = self._check_n_q(n_q)
        return self._codes(self._encoder_context(self._conv_latents(wav, chunk_seconds)), n_q)

    def _conv_latents(self, wav: Tensor, chunk_seconds: float) -> Tensor:
        """The convolutional encoder's latents ``(1, D, T')`` of one checked ``(1, 1, T)`` waveform, in chunks of
        ``chunk_seconds`` with their context (see :meth:`encode_chunked`)."""
        hop = self.hop_length
        frames = self.num_frames(wav.shape[-1])
        step = max(1, int(chunk_seconds * self.sample_rate) // hop)
        padded = self._pad(wav)
        if frames <= step:
            return self.encoder.infer(padded)
        ctx = -(-self.encoder.receptive_field // hop)  # context in whole frames, rounded up
        pieces = []
        for first in range(0, frames, step):
            last = min(first + step, frames)
            lo, hi = max(0, first - ctx), min(frames, last + ctx)
            pieces.append(self.encoder.infer(padded[..., lo * hop : hi * hop])[..., first - lo : last - lo])
        return torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def encode_batch(
        self,
        wavs: Sequence[Tensor],
        n_q: int | None = None,
        chunk_seconds: float = 30.0,
        batch_convs: bool | None = None,
    ) -> list[Tensor]:
        """Units of several waveforms of any lengths: ``(T_i,)`` each -> ``(n_q, ceil(T_i / hop))`` int64 each.

        The latent LSTM, which is causal, runs over the waveforms together, right-padded
        (:meth:`LatentLSTM.forward_batch`): its recurrent products become matrix-matrix, 5-7x less time per
        utterance at 8-32 utterances than one at a time on one thread. The convolutions run on each waveform alone (in
        chunks of ``chunk_seconds``, as :meth:`encode_chunked`), or with ``batch_convs`` (the default on a GPU)
        on padded batches of similar lengths (:meth:`_batched_conv_latents`). Equal to :meth:`encode` of each
        waveform alone to float rounding (a GEMM over more rows may round the last bit differently, which can
        flip a unit at a near tie).

        Args:
            wavs: mono waveforms at ``sample_rate``, ``(T_i,)`` or ``(1, T_i)``, on the model's device.
            n_q: residual depth to keep (default all).
            chunk_seconds: waveforms longer than this are encoded alone in chunks (flat memory).
            batch_convs: run the convolutions on padded batches (``None``: where the model is not on the CPU,
                whose windowed fast path is per waveform).
        """
        n_q = self._check_n_q(n_q)
        wavs = [self._check_wav(w.reshape(1, 1, -1)) for w in wavs]
        if batch_convs is None:
            batch_convs = self._device().type != "cpu"
        context = self.encoder.frame_context() if batch_convs else None
        batch_convs = context is not None  # a reach not known: each waveform alone
        longest = chunk_seconds * self.sample_rate
        alone = [i for i, w in enumerate(wavs) if not batch_convs or w.shape[-1] > longest]
        latents: list[Tensor | None] = [None] * len(wavs)
        for i in alone:
            latents[i] = self._conv_latents(wavs[i], chunk_seconds)[0]
        together = [i for i in range(len(wavs)) if latents[i] is None]  # only with a context
        if together:
            for i, z in zip(together, self._batched_conv_latents([wavs[i] for i in together], *context), strict=True):
                latents[i] = z
        if self.encoder_lstm is not None:
            latents = self.encoder_lstm.forward_batch(latents)
        if not latents:
            return []
        codes = self._codes(torch.cat(latents, dim=-1)[None], n_q)[0]  # one quantizer call over every frame
        return list(codes.split([x.shape[-1] for x in latents], dim=-1))

    def _device(self) -> torch.device:
        param = next(self.parameters(), None)
        return torch.device("cpu") if param is None else param.device

    def _batched_conv_latents(self, wavs: list[Tensor], left: int, right: int) -> list[Tensor]:
        """The convolutional encoder's latents ``(D, T'_i)`` of checked ``(1, 1, T_i)`` waveforms, computed on
        right-padded batches of similar lengths, each equal to the waveform's own; ``left``, ``right``: the
        encoder's frames of context (``Encoder.frame_context``).

        In a padded batch a frame whose receptive field ends within its waveform is exact; the last ``right``
        frames see the padding, so they are taken from a second batch of equal-length tails: each waveform's last
        ``left + right`` frames of audio, whose last ``right`` frames see their true end and ``left`` frames of
        true past. Waveforms shorter than a tail run alone.
        """
        hop = self.hop_length
        frames = [self.num_frames(w.shape[-1]) for w in wavs]
        padded = [self._pad(w)[0, 0] for w in wavs]
        out: list[Tensor | None] = [None] * len(wavs)
        tails = [i for i, n in enumerate(frames) if n >= left + right]
        for i in (i for i, n in enumerate(frames) if n < left + right):
            out[i] = self.encoder.infer(padded[i][None, None])[0]
        for group in length_groups([frames[i] for i in tails], size=CONV_BATCH, flat=CONV_BATCH // 4):
            group = [tails[g] for g in group]
            longest = frames[group[0]] * hop
            batch = torch.stack([F.pad(padded[i], (0, longest - padded[i].shape[-1])) for i in group])[:, None]
            body = self.encoder.infer(batch)
            if not right:  # a causal encoder's frames never see the padding
                for row, i in enumerate(group):
                    out[i] = body[row, :, : frames[i]]
                continue
            ends = torch.stack([padded[i][(frames[i] - left - right) * hop :] for i in group])[:, None]
            end = self.encoder.infer(ends)[..., left:]
            for row, i in enumerate(group):
                out[i] = torch.cat([body[row, :, : frames[i] - right], end[row]], dim=-1)
        return out

    @torch.no_grad()
    def encode_file(self, path: str, n_q: int | None = None, chunk_seconds: float = 30.0) -> Tensor:
        """Units of an audio file: ``(n_q, T')`` int64.

        The file is read as mono at ``sample_rate`` (resampled / downmixed, logged) and encoded in
        chunks (:meth:`encode_chunked`); unreadable or empty audio raises ``ValueError`` naming the file.
        """
        from ..data.audio import load_audio

        wav = torch.from_numpy(load_audio(str(path), self.sample_rate))[None, None]
        param = next(self.parameters())
        return self.encode_chunked(wav.to(param.device), chunk_seconds, n_q=n_q)[0].cpu()

    @torch.no_grad()
    def decode(self, indices: Tensor, length: int | None = None) -> Tensor:
        """Indices ``(B, q, T')`` -> waveform ``(B, 1, T' * hop)``, or exactly ``length`` samples.

        Args:
            indices: int64 codes of the first ``1 <= q <= n_q`` residual levels (q = 1 for a single quantizer).
            length: trim (or zero-pad) the output to this many samples, e.g. the input length.
        """
        if not isinstance(indices, Tensor) or indices.ndim != 3 or not 1 <= indices.shape[1] <= self.n_q:
            shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
            raise ValueError(
                f"expected indices of shape (B, q, T') with 1 <= q <= {self.n_q}, got {shape}"
                + (
                    "; add the level axis with indices[:, None]"
                    if isinstance(indices, Tensor) and indices.ndim == 2
                    else ""
                )
            )
        if indices.shape[-1] == 0:
            raise ValueError("expected at least one frame of indices, got none")
        wav = self.decoder.infer(self._decoder_context(self._latents(indices)))
        _check_finite_output(wav)
        if length is not None:
            if length < 1:
                raise ValueError(f"length must be >= 1, got {length}")
            wav = wav[..., :length] if wav.shape[-1] >= length else F.pad(wav, (0, length - wav.shape[-1]))
        return wav

    @torch.no_grad()
    def decode_utterance(self, codes: Tensor, length: int | None = None) -> Tensor:
        """One utterance's codes ``(q, T')`` (its first ``q <= n_q`` levels) -> waveform ``(T' * hop,)`` or
        ``(length,)``, clamped to [-1, 1]."""
        if codes.ndim != 2:
            raise ValueError(f"expected one utterance's codes of shape (n_q, frames), got {tuple(codes.shape)}")
        return self.decode(codes[None], length=length)[0, 0].clamp(-1, 1)

    def init_stream(self, batch: int = 1) -> StreamState:
        """The streaming state before any audio, for a causal codec (``ValueError`` otherwise).

        Functional: ``codes, state = encode_step(wav, state)`` and ``wav, state = decode_step(codes, state)``
        return new states and leave the old ones intact, so a state can be kept, copied or rolled back.
        """
        if not self.config.causal:
            raise ValueError("streaming needs a causal codec (model.causal: true); this codec is not causal")
        return StreamState(
            self.encoder.init_state(batch),
            self.decoder.init_state(batch),
            None if self.encoder_lstm is None else self.encoder_lstm.init_state(batch),
            None if self.decoder_lstm is None else self.decoder_lstm.init_state(batch),
        )

    @torch.no_grad()
    def encode_step(self, wav: Tensor, state: StreamState, n_q: int | None = None) -> tuple[Tensor, StreamState]:
        """One chunk ``(B, 1, k * hop)`` -> codes ``(B, n_q, k)`` and the new state; the concatenated codes of
        any chunking equal :meth:`encode` of the whole waveform."""
        wav = self._check_wav(wav)
        if wav.shape[-1] % self.hop_length:
            raise ValueError(
                f"a streaming chunk must be a whole number of hops ({self.hop_length}), got {wav.shape[-1]}"
            )
        n_q = self._check_n_q(n_q)
        _check_stream_batch(wav.shape[0], state.encoder, state.encoder_lstm, "chunk")
        latents, enc = self.encoder.step(wav, state.encoder)
        enc_lstm = state.encoder_lstm
        if self.encoder_lstm is not None:
            latents, enc_lstm = self.encoder_lstm.step(latents, enc_lstm)
        return self._codes(latents, n_q), dataclasses.replace(state, encoder=enc, encoder_lstm=enc_lstm)

    @torch.no_grad()
    def decode_step(self, codes: Tensor, state: StreamState) -> tuple[Tensor, StreamState]:
        """Codes ``(B, q, k)`` -> waveform ``(B, 1, k * hop)`` and the new state; concatenated, equal to
        :meth:`decode` of all the codes."""
        if not isinstance(codes, Tensor) or codes.ndim != 3 or not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"expected codes of shape (B, q, k) with 1 <= q <= {self.n_q}")
        if codes.shape[-1] == 0:
            raise ValueError("expected at least one frame of codes, got none")
        _check_stream_batch(codes.shape[0], state.decoder, state.decoder_lstm, "codes")
        latents = self._latents(codes)
        dec_lstm = state.decoder_lstm
        if self.decoder_lstm is not None:
            latents, dec_lstm = self.decoder_lstm.step(latents, dec_lstm)
        wav, dec = self.decoder.step(latents, state.decoder)
        _check_finite_output(wav)
        return wav, dataclasses.replace(state, decoder=dec, decoder_lstm=dec_lstm)

    @contextlib.contextmanager
    def streaming(self, batch: int = 1) -> Iterator[Stream]:
        """``with codec.streaming() as s: codes = s.encode(chunk); wav = s.decode(codes)``: the state kept for
        you (see :meth:`init_stream`)."""
        yield Stream(self, self.init_stream(batch))

    def save_pretrained(self, path: str | pathlib.Path, overwrite: bool = False) -> pathlib.Path:
        """Write a model folder (``config.json`` + ``model.safetensors``), or one ``.pt`` file when ``path`` ends
        in ``.pt``; each file atomically (see :mod:`vqaudio.checkpoint`). A model already at ``path`` is
        refused unless ``overwrite``."""
        return save_model(path, "codec", to_dict(self.config), self, overwrite=overwrite)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> Codec:
        """Load a model folder, a ``.pt`` file (``weights_only=True``) or, with ``huggingface_hub`` installed, a
        Hub id; no pickled code runs, and files of earlier format versions load too. Weights that do not fit
        the config, or hold NaN/Inf, are a :class:`UserError` naming the file."""
        config, state = load_model(path, "codec", map_location)
        try:
            return cls.from_saved(config, state)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None

    @classmethod
    def from_saved(cls, config: dict, state: dict) -> Codec:
        """A codec in eval mode from a saved file's config and weights (see :mod:`vqaudio.checkpoint`); weights
        that do not fit the config are a :class:`UserError` naming the tensor and both shapes."""
        model = cls.from_config(config)
        check_state(model, state)
        model.load_state_dict(state)
        fresh = uninitialised_levels(model.quantizer)
        if fresh:
            log.warning(
                "the codebooks of level(s) %s were never initialised: the model was saved before its training "
                "reached loss.quantizer_start, so its codes are random and its units meaningless",
                ", ".join(map(str, fresh)),
            )
        return model.eval()


def uninitialised_levels(quantizer: nn.Module) -> list[int]:
    """Levels (from 0) of a quantizer whose k-means codebook initialisation never ran (``initted`` still off)."""
    stages = getattr(quantizer, "stages", [quantizer])
    return [i for i, stage in enumerate(stages) if hasattr(stage, "initted") and not bool(stage.initted)]


def _check_finite_output(wav: Tensor) -> None:
    if not bool(torch.isfinite(wav.sum())) and not bool(torch.isfinite(wav).all()):
        bad = int((~torch.isfinite(wav)).sum())
        raise UserError(
            f"the decoder gave {bad} NaN/Inf sample(s) of {wav.numel()}: the model's weights or state are not finite"
        )


def _check_stream_batch(batch: int, layers: list, lstm: LSTMState | None, what: str) -> None:
    """A stream state holds one row per stream: the input's batch must be the state's (conv states are
    ``(B, C, T)``, an LSTM's ``(h, c)`` are ``(layers, B, H)``)."""
    sizes = [t.shape[0] for t in _tensors(layers)] + [t.shape[1] for t in _tensors(list(lstm or ()))]
    if sizes and sizes[0] != batch:
        raise ValueError(
            f"the stream state is for batch {sizes[0]}, the {what} has batch {batch}; "
            f"start a stream of batch {batch} with init_stream(batch={batch})"
        )


def _tensors(items):
    for item in items:
        if isinstance(item, Tensor):
            yield item
        elif isinstance(item, (list, tuple)):
            yield from _tensors(item)
