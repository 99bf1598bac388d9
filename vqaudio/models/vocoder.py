"""Unit vocoder: discrete units (+ a speaker, + optional F0) -> waveform, with the codec's decoder.

The idea of speech-resynthesis' unit HiFi-GAN (Polyak et al. 2021, "Speech Resynthesis from Discrete
Disentangled Self-Supervised Representations"): a learned embedding per unit stream (summed), a speaker
vector and speaker-normalised, quantised log-F0, turned into audio by a GAN-trained generator. Here the
generator is one of the codec's own decoder kinds (:mod:`vqaudio.models.decoders`) behind a small dilated
convolutional pre-net over the unit frames (about 0.8 s of units, as the unit HiFi-GAN sees).

Speaker input (``VocoderConfig.speaker``):

* ``"table"``: one learned vector per training speaker (ids kept in the config);
* ``"reference"``: :class:`ReferenceEncoder` over a reference utterance's log-mel frames (any speaker);
* ``"external"``: an embedding per utterance or speaker read from a Kaldi-style text table
  (``utt_or_spk v1 v2 ...``, e.g. GE2E d-vectors of :class:`vqaudio.scoring.speaker.SpeakerEncoder`);
* ``"none"``.

A learned "no speaker" vector replaces the speaker vector with probability ``speaker_dropout`` in training,
so one model also runs without a speaker.

A vocoder is saved as a model folder (``config.json``, ``model.safetensors``) that carries its unit model in
``unit_model/`` with its identity (``VocoderConfig.unit_model``), so conversion needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
import math
import pathlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checkpoint import check_state, existing_model, load_model, model_checksum, model_id, save_model
from ..config import check_ranges, from_dict, to_dict
from ..errors import UserError
from ..features import MelSpectrogram
from ..fileio import atomic_output, make_dirs
from .decoders import build_decoder, check_decoder_kind, decode_with_phase, istft_options
from .layers import PaddedConv1d, ResidualUnit, make_activation

SPEAKER_MODES = ("table", "reference", "external", "none")
UNIT_MODEL_DIR = "unit_model"
NO_SPEAKER = -1  # a table index that means "no speaker" (the learned null vector)


@dataclass
class VocoderConfig:
    """Architecture of a unit vocoder. ``train-vocoder`` fills the unit fields (``sample_rate``, ``hop_length``,
    ``codebook_size``, ``unit_model``) from the unit model, and ``speakers`` and ``external_dim`` from the training
    data.

    Attributes:
        sample_rate: Hz, the unit model's.
        hop_length: samples per unit frame, the unit model's; must equal ``prod(strides)``.
        codebook_size: units per stream (the vocabulary).
        levels: which residual levels of the units are read, one embedding stream each (``[0]`` for k-means).
        unit_model: the unit model's identity (:func:`vqaudio.checkpoint.model_checksum`); units recorded as made
            by another model are refused.
        embed_dim: width of the unit (and F0) embeddings.
        prenet_channels: width of the pre-net.
        prenet_kernel: kernel of the pre-net's dilated convs.
        prenet_dilations: one residual unit per dilation; with kernel 3, ``[1, 2, 4, 8, 4]`` sees 41 frames
            (0.82 s at 50 Hz).
        latent_dim: channels between the pre-net and the decoder.
        channels, strides, kernel, residual_kernel, dilations, activation, max_channels, weight_norm: the
            decoder's, as in :class:`vqaudio.models.codec.CodecConfig` (``activation`` and ``weight_norm`` are
            the pre-net's too).
        decoder: ``"istft"`` (the default) or ``"seanet"``, as :class:`vqaudio.models.codec.CodecConfig`; vocoder
            files written before this field existed are SEANet.
        decoder_dim, decoder_blocks, decoder_hidden, decoder_kernel: ``istft``: as in ``CodecConfig``.
        speaker: ``"table"``, ``"reference"``, ``"external"`` or ``"none"``.
        speakers: ``table``: the training speakers' ids, in table order.
        speaker_dim: width of the speaker vector.
        external_dim: ``external``: width of the embeddings in the table (Resemblyzer's GE2E: 256); ``train-vocoder``
            sets it from the table.
        speaker_dropout: training probability of replacing the speaker by the learned "no speaker" vector.
        reference_mels, reference_channels: ``reference``: mel bands and conv width of the reference encoder.
        reference_seconds: ``reference``: length of the reference crops seen in training.
        reference_min_seconds: shorter references are refused.
        f0: condition on quantised, speaker-normalised log-F0.
        f0_bins: voiced F0 bins (bin 0: unvoiced; bin ``f0_bins + 1``: F0 not given).
        f0_range: normalised log-F0 is clipped to ``[-f0_range, f0_range]`` standard deviations.
        f0_dropout: training probability of replacing an utterance's F0 by "not given".
    """

    RANGES: ClassVar[dict[str, str]] = {
        "sample_rate": ">=1",
        "hop_length": ">=1",
        "codebook_size": ">=1",
        "levels": ">=0",
        "embed_dim": ">=1",
        "prenet_channels": ">=1",
        "prenet_kernel": ">=1",
        "prenet_dilations": ">=1",
        "latent_dim": ">=1",
        "channels": ">=1",
        "strides": ">=1",
        "kernel": ">=1",
        "residual_kernel": ">=1",
        "dilations": ">=1",
        "max_channels": ">=1",
        "decoder_dim": ">=1",
        "decoder_blocks": ">=1",
        "decoder_hidden": ">=1",
        "decoder_kernel": ">=1",
        "speaker_dim": ">=1",
        "external_dim": ">=1",
        "speaker_dropout": "[0, 1]",
        "reference_mels": ">=1",
        "reference_channels": ">=1",
        "reference_seconds": ">0",
        "reference_min_seconds": ">0",
        "f0_bins": ">=1",
        "f0_range": ">0",
        "f0_dropout": "[0, 1]",
    }

    sample_rate: int = 16000
    hop_length: int = 320
    codebook_size: int = 256
    levels: list[int] = field(default_factory=lambda: [0])
    unit_model: str = ""
    embed_dim: int = 128
    prenet_channels: int = 256
    prenet_kernel: int = 3
    prenet_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 4])
    latent_dim: int = 128
    channels: int = 32
    strides: list[int] = field(default_factory=lambda: [2, 4, 5, 8])
    kernel: int = 7
    residual_kernel: int = 3
    dilations: list[int] = field(default_factory=lambda: [1, 3, 9])
    activation: str = "snake"
    max_channels: int = 512
    weight_norm: bool = True
    decoder: str = "istft"
    decoder_dim: int = 256
    decoder_blocks: int = 6
    decoder_hidden: int | None = None
    decoder_kernel: int = 7
    speaker: str = "table"
    speakers: list[str] = field(default_factory=list)
    speaker_dim: int = 128
    external_dim: int = 256
    speaker_dropout: float = 0.1
    reference_mels: int = 80
    reference_channels: int = 128
    reference_seconds: float = 2.0
    reference_min_seconds: float = 1.0
    f0: bool = False
    f0_bins: int = 32
    f0_range: float = 3.0
    f0_dropout: float = 0.1

    def __post_init__(self) -> None:
        self.check()

    def check(self, where: str = "vocoder config") -> VocoderConfig:
        """Raise :class:`UserError` naming the first bad value; returns ``self``."""
        check_ranges(self, where)
        check_decoder_kind(self.decoder, where)
        if self.speaker not in SPEAKER_MODES:
            raise UserError(f"{where}.speaker must be one of {SPEAKER_MODES}, got {self.speaker!r}")
        if self.speaker == "table" and self.speakers and len(set(self.speakers)) != len(self.speakers):
            raise UserError(f"{where}.speakers: duplicate speaker ids in {self.speakers}")
        if not self.levels or len(set(self.levels)) != len(self.levels):
            raise UserError(f"{where}.levels must be distinct residual levels such as [0] or [0, 1], got {self.levels}")
        if math.prod(self.strides) != self.hop_length:
            raise UserError(
                f"{where}: the decoder's strides {self.strides} give hop {math.prod(self.strides)}, "
                f"but hop_length is {self.hop_length}; the strides must multiply to the unit model's hop"
            )
        if self.reference_min_seconds > self.reference_seconds:
            raise UserError(
                f"{where}.reference_min_seconds ({self.reference_min_seconds}) exceeds reference_seconds "
                f"({self.reference_seconds})"
            )
        return self

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def receptive_frames(self) -> int:
        """Unit frames the pre-net sees around each frame."""
        return 1 + 2 + sum((self.prenet_kernel - 1) * d for d in self.prenet_dilations)


class PreNet(nn.Module):
    """``(B, E, T')`` unit embeddings -> ``(B, latent_dim, T')``: conv (k=3), dilated residual units, 1x1 conv.

    Args:
        cin: embedding width E; channels: pre-net width; cout: output width.
        kernel, dilations: of the residual units; activation as :func:`~vqaudio.models.layers.make_activation`.
    """

    def __init__(
        self,
        cin: int,
        channels: int,
        cout: int,
        kernel: int,
        dilations: Sequence[int],
        activation: str,
        weight_norm: bool,
    ) -> None:
        super().__init__()
        kw = dict(causal=False, weight_norm=weight_norm)
        self.net = nn.Sequential(
            PaddedConv1d(cin, channels, 3, **kw),
            *(ResidualUnit(channels, d, kernel, activation, out_kernel=1, **kw) for d in dilations),
            make_activation(activation, channels),
            PaddedConv1d(channels, cout, 1, **kw),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ReferenceEncoder(nn.Module):
    """Reference waveform ``(B, 1, T)`` -> voice vector ``(B, dim)``: log-mel frames (25 ms windows, 10 ms hop),
    three dilated 1-D convs, attentive statistics pooling (weighted mean and standard deviation over time,
    Okabe et al. 2018), a linear layer. Works on any length of at least one window.

    Args:
        sample_rate: Hz; n_mels: mel bands; channels: conv width; dim: output width.
    """

    def __init__(self, sample_rate: int, n_mels: int, channels: int, dim: int) -> None:
        super().__init__()
        window = round(0.025 * sample_rate)
        self.mel = MelSpectrogram(sample_rate, n_fft=window, hop=round(0.01 * sample_rate), n_mels=n_mels)
        layers: list[nn.Module] = []
        cin = n_mels
        for d in (1, 2, 3):
            layers += [nn.Conv1d(cin, channels, 5, dilation=d, padding=2 * d), nn.ReLU()]
            cin = channels
        self.convs = nn.Sequential(*layers)
        self.attention = nn.Conv1d(channels, 1, 1)
        self.out = nn.Linear(2 * channels, dim)

    def forward(self, wav: Tensor) -> Tensor:
        h = self.convs(self.mel(wav))  # (B, C, frames)
        w = torch.softmax(self.attention(h), dim=-1)
        mean = (h * w).sum(-1)
        std = ((h * h * w).sum(-1) - mean * mean).clamp_min(1e-6).sqrt()
        return self.out(torch.cat([mean, std], dim=1))


@dataclass
class Voice:
    """A reference voice, computed once (:meth:`Vocoder.voice`): the speaker input of :meth:`Vocoder.generate`
    ``(1, ...)``. Its pitch level and range come with it: the F0 input is normalised per speaker."""

    speaker: Tensor


class Vocoder(nn.Module):
    """Units ``(B, S, T')`` (+ speaker, + F0 bins) -> waveform ``(B, 1, T' * hop)``.

    Args:
        config: architecture (checked).
        unit_model: the unit model's file or folder, copied into the vocoder's folder by :meth:`save_pretrained`
            and loaded by :meth:`unit_model`; :meth:`from_pretrained` sets it to the folder's copy.
    """

    def __init__(self, config: VocoderConfig, unit_model: str | pathlib.Path | None = None) -> None:
        super().__init__()
        self.config = config = config.check()
        self.unit_model_path = None if unit_model is None else pathlib.Path(unit_model)
        self.checksum: str | None = None  # the model folder's identity (model_checksum), set by from_pretrained
        self.__dict__["_unit_model"] = None  # loaded on demand; not a submodule, not in the weights
        self.embeddings = nn.ModuleList(nn.Embedding(config.codebook_size, config.embed_dim) for _ in config.levels)
        # speaker-normalised quantised F0 as an input embedding: Polyak et al. 2021 sec. 2
        self.f0_embedding = nn.Embedding(config.f0_bins + 2, config.embed_dim) if config.f0 else None
        self.prenet = PreNet(
            config.embed_dim,
            config.prenet_channels,
            config.latent_dim,
            config.prenet_kernel,
            config.prenet_dilations,
            config.activation,
            config.weight_norm,
        )
        self.speaker_encoder: nn.Module | None = None
        if config.speaker == "table":
            self.speaker_encoder = nn.Embedding(max(1, len(config.speakers)), config.speaker_dim)
        elif config.speaker == "reference":
            self.speaker_encoder = ReferenceEncoder(
                config.sample_rate, config.reference_mels, config.reference_channels, config.speaker_dim
            )
        elif config.speaker == "external":
            self.speaker_encoder = nn.Linear(config.external_dim, config.speaker_dim)
        if config.speaker != "none":
            self.null_speaker = nn.Parameter(torch.zeros(config.speaker_dim))
            self.speaker_proj = nn.Linear(config.speaker_dim, config.latent_dim)
        self.decoder = build_decoder(
            config.decoder,
            strides=config.strides,
            latent_dim=config.latent_dim,
            causal=False,
            seanet=dict(
                channels=config.channels,
                kernel=config.kernel,
                residual_kernel=config.residual_kernel,
                dilations=config.dilations,
                activation=config.activation,
                weight_norm=config.weight_norm,
                max_channels=config.max_channels,
            ),
            istft=istft_options(config),
            where="vocoder config",
        )

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def f0_unknown(self) -> int:
        """The F0 bin that stands for "F0 not given"."""
        return self.config.f0_bins + 1

    # speaker inputs ---------------------------------------------------------------------------------------

    def speaker_index(self, name: str) -> int:
        """The table index of training speaker ``name``; an unknown id is a :class:`UserError` listing the known."""
        if self.config.speaker != "table":
            raise UserError(f"this vocoder's speaker input is {self.config.speaker!r}, not a table of speaker ids")
        try:
            return self.config.speakers.index(str(name))
        except ValueError:
            known = self.config.speakers
            shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
            raise UserError(f"unknown speaker {name!r}; this vocoder knows: {shown}") from None

    def check_reference(self, wav, name: str = "reference", sample_rate: int | None = None) -> Tensor:
        """A reference waveform (any form :func:`~vqaudio.data.audio.as_waveform` takes, at ``sample_rate``,
        default the vocoder's) as ``(1, 1, T)``; one line when it is shorter than ``reference_min_seconds`` or
        holds no speech: less than :data:`MIN_ACTIVE_SECONDS` of 20 ms frames above -60 dBFS once its DC
        offset is removed (silence, a constant, a click)."""
        from ..data.audio import as_waveform

        wav = as_waveform(wav, name, sample_rate, self.sample_rate)
        seconds = wav.shape[-1] / self.sample_rate
        if seconds < self.config.reference_min_seconds:
            raise UserError(
                f"{name}: {seconds:.2f} s of audio; the speaker encoder needs at least "
                f"{self.config.reference_min_seconds:.2f} s"
            )
        if active_seconds(wav, self.sample_rate) < MIN_ACTIVE_SECONDS:
            raise UserError(
                f"{name}: silent (less than {MIN_ACTIVE_SECONDS:g} s above -60 dBFS once its DC offset is removed: "
                "silence, a constant or clicks); a reference voice needs speech"
            )
        return torch.from_numpy(wav).reshape(1, 1, -1)

    def speaker_vector(self, speaker=None) -> Tensor | None:
        """The ``(B, speaker_dim)`` vector of a speaker input, or ``None`` without one.

        Args:
            speaker: ``table``: indices ``(B,)`` (``-1``: no speaker); ``reference``: waveforms ``(B, 1, T)``;
                ``external``: embeddings ``(B, external_dim)``; ``None``: the learned "no speaker" vector.
        """
        mode = self.config.speaker
        if mode == "none" or speaker is None:
            return None
        if mode == "table":
            idx = torch.as_tensor(speaker, dtype=torch.long, device=_device_of(self)).reshape(-1)
            if bool(((idx < NO_SPEAKER) | (idx >= len(self.config.speakers))).any()):
                raise UserError(f"speaker index outside [-1, {len(self.config.speakers) - 1}]: {idx.tolist()}")
            vec = self.speaker_encoder(idx.clamp_min(0))
            return torch.where((idx == NO_SPEAKER)[:, None], self.null_speaker.expand_as(vec), vec)
        if mode == "reference":
            return self.speaker_encoder(speaker)
        emb = torch.as_tensor(speaker, dtype=torch.float32, device=_device_of(self))
        if emb.ndim != 2 or emb.shape[1] != self.config.external_dim:
            raise UserError(
                f"expected external speaker embeddings (B, {self.config.external_dim}), got {tuple(emb.shape)}"
            )
        return self.speaker_encoder(emb)

    # the network ------------------------------------------------------------------------------------------

    def check_units(self, units: Tensor) -> Tensor:
        """``(B, S, T')`` int64 units with ``S = len(levels)``; a unit outside ``[0, codebook_size)`` is a
        :class:`UserError`."""
        if not isinstance(units, Tensor) or units.ndim != 3 or units.shape[1] != len(self.config.levels):
            shape = tuple(units.shape) if isinstance(units, Tensor) else type(units).__name__
            raise ValueError(f"expected units of shape (B, {len(self.config.levels)}, T'), got {shape}")
        if units.shape[-1] == 0:
            raise ValueError("expected at least one frame of units, got none")
        low, high = int(units.min()), int(units.max())
        if low < 0 or high >= self.config.codebook_size:
            bad = low if low < 0 else high
            raise UserError(f"unit {bad} is outside this vocoder's vocabulary [0, {self.config.codebook_size - 1}]")
        return units.long()

    def latents(self, units: Tensor, speaker=None, f0: Tensor | None = None) -> Tensor:
        """``(B, S, T')`` units -> ``(B, latent_dim, T')`` decoder input (see :meth:`forward`)."""
        units = self.check_units(units)
        x = sum(emb(units[:, s]) for s, emb in enumerate(self.embeddings))  # (B, T', E)
        if self.f0_embedding is not None:
            if f0 is None:
                f0 = torch.full_like(units[:, 0], self.f0_unknown)
            f0 = torch.as_tensor(f0, dtype=torch.long, device=units.device)
            if f0.shape != units[:, 0].shape:
                raise ValueError(f"expected F0 bins (B, T') = {tuple(units[:, 0].shape)}, got {tuple(f0.shape)}")
            if self.training and self.config.f0_dropout > 0:
                drop = torch.rand(f0.shape[0], device=f0.device) < self.config.f0_dropout
                f0 = torch.where(drop[:, None], torch.full_like(f0, self.f0_unknown), f0)
            x = x + self.f0_embedding(f0)
        h = self.prenet(x.transpose(1, 2))
        if self.config.speaker != "none":
            vec = self.speaker_vector(speaker)
            null = self.null_speaker.expand(units.shape[0], -1)
            if vec is None:
                vec = null
            elif self.training and self.config.speaker_dropout > 0:
                # dropout to a learned null condition, as classifier-free guidance trains (Ho and Salimans 2022)
                drop = torch.rand(vec.shape[0], device=vec.device) < self.config.speaker_dropout
                vec = torch.where(drop[:, None], null, vec)
            h = h + self.speaker_proj(vec)[:, :, None]
        return h

    def forward(self, units: Tensor, speaker=None, f0: Tensor | None = None) -> Tensor:
        """Training pass: units ``(B, S, T')`` -> waveform ``(B, 1, T' * hop)``.

        Args:
            units: int64 units of the config's ``levels``, in ``[0, codebook_size)``.
            speaker: see :meth:`speaker_vector`.
            f0: ``(B, T')`` F0 bins of :func:`quantize_f0` (``f0`` vocoders; ``None``: "not given").
        """
        return self.decoder(self.latents(units, speaker, f0))

    def forward_with_phase(self, units: Tensor, speaker=None, f0: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """:meth:`forward` and the iSTFT decoder's phase ``(B, n_fft / 2 + 1, T')`` (``None`` for SEANet)."""
        return decode_with_phase(self.decoder, self.latents(units, speaker, f0))

    @torch.no_grad()
    def generate(self, units: Tensor, speaker=None, f0: Tensor | None = None) -> Tensor:
        """:meth:`forward` without autograd, through the decoder's fast CPU inference."""
        return self.decoder.infer(self.latents(units, speaker, f0))

    # the API of resynthesis and conversion ----------------------------------------------------------------

    def voice(self, reference, name: str = "reference", sample_rate: int | None = None) -> Voice:
        """The voice of a reference waveform, computed once for many utterances: its speaker input
        (``reference``: the waveform for the reference encoder; ``external``: its Resemblyzer GE2E embedding).

        Args:
            reference: ``(T,)`` samples, or any form :func:`~vqaudio.data.audio.as_waveform` takes (channels are
                mixed down, integer samples scaled).
            name: what error messages call it.
            sample_rate: of ``reference`` when it is not the vocoder's (then resampled).

        Too short, silent or NaN: one :class:`UserError` line naming ``name``."""
        mode = self.config.speaker
        if mode in ("table", "none"):
            what = "a table of training speakers; give a speaker id" if mode == "table" else "no speaker input"
            raise UserError(f"this vocoder has {what}, not a reference voice")
        ref = self.check_reference(reference, name, sample_rate)
        samples = ref[0, 0].cpu().numpy()
        if mode == "reference":
            speaker = ref.to(_device_of(self))
        else:
            if self.__dict__.get("_ge2e") is None:  # loaded once per vocoder, not per reference
                self.__dict__["_ge2e"] = ge2e_encoder()
            emb = self.__dict__["_ge2e"].embed(samples, self.sample_rate, name="reference")
            speaker = torch.from_numpy(np.asarray(emb, dtype=np.float32))[None].to(_device_of(self))
        return Voice(speaker)

    def _speaker_input(self, speaker=None, reference=None):
        """The speaker input of :meth:`generate` for one utterance."""
        if speaker is not None and reference is not None:
            raise UserError("give a speaker or a reference voice, not both")
        if reference is not None:
            return (reference if isinstance(reference, Voice) else self.voice(reference)).speaker
        if speaker is None:
            return None
        mode = self.config.speaker
        if mode == "table":
            return torch.tensor([self.speaker_index(speaker)], device=_device_of(self))
        if mode == "external" and not isinstance(speaker, str):
            return torch.as_tensor(np.asarray(speaker, dtype=np.float32), device=_device_of(self)).reshape(1, -1)
        needs = {"external": "a reference or an embedding", "reference": "a reference", "none": "no speaker"}[mode]
        raise UserError(f"this vocoder's speaker input is {mode!r}: it takes {needs}, not a speaker id")

    @torch.no_grad()
    def resynthesize(self, units, speaker=None, reference=None, f0=None, length: int | None = None) -> Tensor:
        """One utterance's units -> waveform ``(T' * hop,)`` (or ``(length,)``) in [-1, 1].

        Args:
            units: ``(S, T')`` (or ``(T',)`` with one stream) integer units of the config's ``levels``.
            speaker: a training speaker id (``table``) or an embedding (``external``); ``None``: no speaker.
            reference: a reference waveform ``(T,)`` at ``sample_rate``, or its :meth:`voice`.
            f0: ``(T',)`` integer F0 bins (:func:`quantize_f0`); ``None`` for "not given".
            length: samples to return (cut or zero-padded), ``>= 1``.

        Units or F0 bins that are not integers, units of another shape, and a ``length`` below 1 are a
        ``ValueError`` naming the argument.
        """
        device = _device_of(self)
        units = integer_tensor(units, "units")
        if units.ndim not in (1, 2) or (units.ndim == 2 and units.shape[0] != len(self.config.levels)):
            raise ValueError(
                f"units: expected (T',) or ({len(self.config.levels)}, T') for levels {self.config.levels}, got "
                f"shape {tuple(units.shape)}"
            )
        if length is not None and (isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1):
            raise ValueError(f"length: expected a number of samples >= 1, got {length!r}")
        units = (units[None] if units.ndim == 1 else units)[None].to(device)
        spk = self._speaker_input(speaker, reference)
        if f0 is not None:
            f0 = integer_tensor(f0, "f0").to(device)[None]
        wav = self.generate(units, spk, f0)[0, 0]
        if length is not None:
            wav = wav[:length] if wav.shape[-1] >= length else F.pad(wav, (0, length - wav.shape[-1]))
        return wav.clamp(-1, 1).cpu()

    @torch.no_grad()
    def encode_units(self, wav, sample_rate: int | None = None) -> Tensor:
        """A waveform (``(T,)`` at ``sample_rate``, default the vocoder's; any form
        :func:`~vqaudio.data.audio.as_waveform` takes) -> ``(S, T')`` units of the config's levels, from the unit
        model."""
        from ..data.audio import as_waveform

        model = self.unit_model()
        x = torch.from_numpy(as_waveform(wav, "wav", sample_rate, self.sample_rate)).reshape(1, 1, -1)
        codes = model.encode_chunked(x.to(_device_of(model)))[0]
        return codes[self.config.levels].cpu()

    def source_f0(self, wav, frames: int) -> Tensor:
        """``(frames,)`` F0 bins of a waveform ``(T,)``, normalised by its own voiced log-F0 statistics: the
        contour, not the pitch level, which comes with the speaker input (speaker-normalised F0, Polyak et al.
        2021; so a conversion keeps the source's intonation in the target's range). No voiced frame: all
        unvoiced."""
        track = frame_log_f0(np.asarray(wav, dtype=np.float32), self.sample_rate, self.hop_length)[:frames]
        track = np.pad(track, (0, frames - track.shape[0]), constant_values=np.nan)
        return quantize_f0(track, f0_stats([track]), self.config.f0_bins, self.config.f0_range)

    @torch.no_grad()
    def convert(self, wav, reference=None, speaker: str | None = None, sample_rate: int | None = None) -> Tensor:
        """Voice conversion: ``wav`` spoken in the voice of ``reference`` (a waveform or its :meth:`voice`) or of
        a training ``speaker`` (``table`` vocoders); returns ``(T,)`` in [-1, 1] at the vocoder's rate.

        ``wav`` and a waveform ``reference`` are ``(T,)`` samples at ``sample_rate`` (default the vocoder's; other
        rates are resampled), or any form :func:`~vqaudio.data.audio.as_waveform` takes (channels mixed down,
        integer samples scaled); no samples or a NaN/Inf sample is a ``ValueError`` naming the argument.

        The units come from the vocoder's unit model; with ``f0``, the source's speaker-normalised pitch contour
        (:meth:`source_f0`), whose level and range the voice sets.
        """
        from ..data.audio import as_waveform

        if (reference is None) == (speaker is None):
            raise UserError("convert into the voice of a reference or of a training speaker: give one of them")
        wav = as_waveform(wav, "wav", sample_rate, self.sample_rate)
        if reference is None or isinstance(reference, Voice):
            voice = reference
        else:
            voice = self.voice(reference, sample_rate=sample_rate)
        units = self.encode_units(wav)
        f0 = self.source_f0(wav, units.shape[-1]) if self.config.f0 else None
        return self.resynthesize(units, speaker=speaker, reference=voice, f0=f0, length=wav.shape[0])

    # files ------------------------------------------------------------------------------------------------

    def unit_model(self):
        """The unit model the vocoder was trained on (a codec or a k-means model), loaded once and checked to be
        the one its config names."""
        if self._unit_model is None:
            from ..units.model import load_unit_model

            if self.unit_model_path is None:
                raise UserError("this vocoder has no unit model attached (load it with Vocoder.from_pretrained)")
            found = model_checksum(self.unit_model_path)
            if self.config.unit_model and found != self.config.unit_model:
                raise UserError(
                    f"{self.unit_model_path}: unit model {found[:12]}... is not the one this vocoder was trained on "
                    f"({self.config.unit_model[:12]}...)"
                )
            self.__dict__["_unit_model"] = load_unit_model(self.unit_model_path)
        return self._unit_model

    def save_pretrained(self, path: str | pathlib.Path, overwrite: bool = False) -> pathlib.Path:
        """Write a model folder: the unit model in ``unit_model/``, then ``model.safetensors`` and ``config.json``
        (each file atomically); a config without the unit model's identity gets it. A model already at ``path`` is
        refused unless ``overwrite``."""
        path = pathlib.Path(path)
        if existing_model(path) and not overwrite:
            raise UserError(
                f"{path}: a model is already there; refusing to replace it (remove it or choose another path)"
            )
        unit_model = self.unit_model()
        make_dirs(path, "vocoder")
        unit_model.save_pretrained(path / UNIT_MODEL_DIR, overwrite=True)
        self.config.unit_model = self.config.unit_model or model_checksum(path / UNIT_MODEL_DIR)
        return save_model(path, "vocoder", to_dict(self.config), self, overwrite=True, folder=True)

    @classmethod
    def from_pretrained(cls, path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> Vocoder:
        """Load a vocoder folder written by :meth:`save_pretrained` (``weights_only`` safetensors, no pickled
        code); its unit model is ``path/unit_model``."""
        path = pathlib.Path(path)
        if not path.is_dir():
            raise UserError(f"{path}: not a vocoder model folder (train-vocoder writes EXP/model.pt as one)")
        if not (path / UNIT_MODEL_DIR).is_dir():
            raise UserError(f"{path}: a vocoder folder holds its unit model in {UNIT_MODEL_DIR}/, which is missing")
        config, state = load_model(path, "vocoder", map_location)
        try:
            model = cls(from_dict(VocoderConfig, config, where=f"{path} config"), unit_model=path / UNIT_MODEL_DIR)
            check_state(model, state)
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        found = model_checksum(path / UNIT_MODEL_DIR)
        if model.config.unit_model and found != model.config.unit_model:
            raise UserError(
                f"{path}: its {UNIT_MODEL_DIR}/ holds unit model {found[:12]}..., not the one the vocoder was trained "
                f"on ({model.config.unit_model[:12]}... in its config); restore that unit model"
            )
        model.load_state_dict(state)
        model.checksum = model_id("vocoder", config, state)
        return model.eval()


MIN_ACTIVE_SECONDS = 0.2  # speech a reference must hold: 20 ms frames above -60 dBFS


def active_seconds(wav: np.ndarray, sample_rate: int) -> float:
    """Seconds of 20 ms frames of ``wav`` whose RMS, once the DC offset is removed, is above -60 dBFS."""
    x = np.asarray(wav, dtype=np.float64) - float(np.mean(wav))
    frame = max(1, round(0.02 * sample_rate))
    n = x.shape[0] // frame
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    return float((rms > 1e-3).sum() * frame / sample_rate)


def integer_tensor(x, name: str) -> Tensor:
    """``x`` as an int64 tensor; floating, boolean or complex values are a ``ValueError`` naming ``name`` (a
    float unit id is no unit)."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise ValueError(f"{name}: expected integers, got {t.dtype}")
    return t.long()


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers())
    return tensor.device


def ge2e_encoder():
    """Resemblyzer's GE2E speaker encoder (:class:`vqaudio.scoring.speaker.SpeakerEncoder`) for ``external``
    speaker embeddings; a missing package is one line saying what to install."""
    from ..scoring.packages import require
    from ..scoring.speaker import SpeakerEncoder

    require("resemblyzer", "external speaker embeddings (model.speaker: external, Resemblyzer's GE2E)")
    return SpeakerEncoder()


def check_unit_model(config: VocoderConfig, unit_model, where: str) -> None:
    """Refuse, in one line, a unit model whose hop is not the decoder's (``prod(strides)``) or that has fewer
    levels than ``config.levels`` asks for."""
    hop = math.prod(config.strides)
    if unit_model.hop_length != hop:
        raise UserError(
            f"{where}: hop {unit_model.hop_length} ({unit_model.frame_rate:g} frames/s at {unit_model.sample_rate} "
            f"Hz), but the vocoder's decoder strides {config.strides} give hop {hop}; the vocoder runs at the unit "
            "frame rate, so set model.strides to multiply to the unit model's hop"
        )
    if max(config.levels) >= unit_model.n_q:
        raise UserError(f"{where}: has {unit_model.n_q} level(s) of units; levels {config.levels} asked for")


# The vocoder fields a codec's decoder fixes: what :func:`decoder_fields` copies from a codec's config.
DECODER_FIELDS = (
    "decoder",
    "latent_dim",
    "channels",
    "strides",
    "kernel",
    "residual_kernel",
    "dilations",
    "activation",
    "max_channels",
    "weight_norm",
    "decoder_dim",
    "decoder_blocks",
    "decoder_hidden",
    "decoder_kernel",
)


def decoder_fields(codec_config, where: str) -> dict:
    """The :class:`VocoderConfig` fields that build a decoder of the same shape as a codec's (``codec_config``, a
    :class:`~vqaudio.models.codec.CodecConfig`), so its weights can start the vocoder's. A causal codec's decoder
    (left padding) or one with residual units of a second kernel other than 1 is refused in one line."""
    if codec_config.causal:
        raise UserError(f"{where}: a causal codec's decoder pads on the left; the vocoder's decoder is not causal")
    if codec_config.decoder == "seanet" and codec_config.residual_out_kernel != 1:
        raise UserError(
            f"{where}: residual_out_kernel {codec_config.residual_out_kernel}; the vocoder's decoder has 1 (SEANet's)"
        )
    return {name: getattr(codec_config, name) for name in DECODER_FIELDS}


# F0 -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class F0Stats:
    """Mean and standard deviation of a speaker's voiced log-F0 (natural log of Hz)."""

    mean: float
    std: float


MIN_LOG_F0_STD = 0.02  # a floor for speakers with very few voiced frames


def frame_log_f0(wav: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """``(T,)`` samples -> ``(ceil(T / hop),)`` float32 log-F0 per unit frame, NaN where unvoiced: the mean log
    of pYIN's voiced 10 ms frames (:func:`vqaudio.scoring.pitch.f0_track`) whose centres fall in the frame. A
    track without a voiced frame is all NaN, not an error."""
    from ..scoring.pitch import HOP_LENGTH, f0_track

    wav = np.asarray(wav, dtype=np.float32).ravel()
    frames = max(1, -(-wav.shape[0] // hop))
    f0, voiced = f0_track(wav, sample_rate)
    centres = np.arange(f0.shape[0]) * HOP_LENGTH / 16000 * sample_rate  # pYIN frames are centred (16 kHz)
    idx = np.minimum((centres // hop).astype(np.int64), frames - 1)[voiced]
    counts = np.bincount(idx, minlength=frames)
    sums = np.bincount(idx, weights=np.log(f0[voiced]), minlength=frames)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).astype(np.float32)


def f0_stats(tracks: Sequence[np.ndarray]) -> F0Stats | None:
    """Statistics of the voiced frames of some log-F0 tracks; ``None`` when none is voiced."""
    values = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for t in tracks]) if tracks else np.zeros(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    return F0Stats(float(values.mean()), max(float(values.std()), MIN_LOG_F0_STD))


def quantize_f0(log_f0: np.ndarray, stats: F0Stats | None, bins: int, limit: float) -> Tensor:
    """``(T',)`` log-F0 (NaN: unvoiced) -> ``(T',)`` int64 bins: 0 unvoiced, else ``1..bins`` uniform over the
    speaker-normalised ``[-limit, limit]`` standard deviations. Without statistics everything is unvoiced."""
    log_f0 = np.asarray(log_f0, dtype=np.float64)
    voiced = np.isfinite(log_f0)
    if stats is None:
        return torch.zeros(log_f0.shape[0], dtype=torch.long)
    z = np.clip((np.where(voiced, log_f0, stats.mean) - stats.mean) / stats.std, -limit, limit)
    idx = 1 + np.minimum(np.floor((z + limit) / (2 * limit) * bins), bins - 1).astype(np.int64)
    return torch.from_numpy(np.where(voiced, idx, 0))


class F0Cache:
    """Per-utterance unit-frame log-F0 (:func:`frame_log_f0`) kept on disk, since pYIN is slow: ``folder/<key>.npz``
    (float16), keyed by the sha1 of the settings and the samples, written atomically.

    Args:
        folder: cache directory (created); sample_rate, hop: the vocoder's.
    """

    def __init__(self, folder: str | pathlib.Path, sample_rate: int, hop: int) -> None:
        from ..scoring.pitch import FMAX, FMIN, FRAME_LENGTH, HOP_LENGTH

        self.folder = pathlib.Path(folder)
        self.sample_rate, self.hop = sample_rate, hop
        settings = dict(sr=sample_rate, hop=hop, fmin=FMIN, fmax=FMAX, frame=FRAME_LENGTH, pyin_hop=HOP_LENGTH)
        self.settings = json.dumps(settings, sort_keys=True).encode()
        self.hits = self.misses = 0

    def path(self, wav: np.ndarray) -> pathlib.Path:
        h = hashlib.sha1(self.settings)
        h.update(np.ascontiguousarray(wav, dtype=np.float32).tobytes())
        return self.folder / f"{h.hexdigest()}.npz"

    def __call__(self, wav: np.ndarray) -> np.ndarray:
        path = self.path(wav)
        if path.is_file():
            self.hits += 1
            with np.load(path) as data:
                return data["log_f0"].astype(np.float32)
        self.misses += 1
        track = frame_log_f0(wav, self.sample_rate, self.hop)
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, log_f0=track.astype(np.float16))
        return track


def read_embeddings(path: str | pathlib.Path, dim: int | None = None) -> dict[str, np.ndarray]:
    """A Kaldi-style text table of embeddings, ``key v1 v2 ...`` per line (an utterance or a speaker id; Kaldi's
    ``[ ... ]`` brackets are accepted); rows of another width than the first (or ``dim``) are a :class:`UserError`
    naming the line."""
    from ..data.kaldi import check_id, text_lines

    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such speaker embedding table")
    out: dict[str, np.ndarray] = {}
    for n, line in text_lines(path):
        parts = [p for p in line.split() if p not in ("[", "]")]
        if not parts:
            continue
        key = check_id(parts[0], path, n)
        try:
            vec = np.array([float(v) for v in parts[1:]], dtype=np.float32)
        except ValueError:
            raise UserError(f"{path}:{n}: embedding values must be numbers") from None
        width = dim if dim is not None else (next(iter(out.values())).shape[0] if out else vec.shape[0])
        if vec.shape[0] != width or width == 0 or not np.isfinite(vec).all():
            raise UserError(f"{path}:{n}: expected {width} finite values for {key!r}, got {vec.shape[0]}")
        if key in out:
            raise UserError(f"{path}:{n}: duplicate key {key!r}")
        out[key] = vec
    if not out:
        raise UserError(f"{path}: no embeddings")
    return out


def write_embeddings(path: str | pathlib.Path, table: dict[str, np.ndarray]) -> pathlib.Path:
    """Write :func:`read_embeddings`' format, keys in C-locale order, atomically."""
    from ..fileio import atomic_write_text

    lines = [f"{k} {' '.join(f'{v:.6g}' for v in table[k])}\n" for k in sorted(table, key=str.encode)]
    return atomic_write_text(path, "".join(lines))
