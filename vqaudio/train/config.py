"""Typed training configs for ``vqaudio train-codec`` (YAML <-> dataclasses)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..models.codec import CodecConfig
from ..models.wavenet import WaveNetConfig


@dataclass
class DataConfig:
    """Attributes:
    segment_seconds: random crop length for training.
    batch_size: crops per batch (per device).
    num_workers: DataLoader worker processes.
    valid_max_utts: validation utterances used (the first ones in sorted order).
    valid_max_seconds: validation utterances are cut to this length.
    """

    RANGES: ClassVar[dict[str, str]] = {
        "segment_seconds": ">0",
        "batch_size": ">=1",
        "num_workers": ">=0",
        "valid_max_utts": ">=1",
        "valid_max_seconds": ">=0",
    }

    segment_seconds: float = 1.0
    batch_size: int = 16
    num_workers: int = 4
    valid_max_utts: int = 16
    valid_max_seconds: float = 10.0


@dataclass
class LossConfig:
    """Loss weights (EnCodec/DAC-style) and when quantization and the adversarial terms switch on.

    ``quantizer_start``: codec steps trained as a continuous autoencoder (latents straight to the
    decoder) before the quantizer switches on and k-means-initialises its codes on the trained latents
    (as Łańcucki et al. 2020 initialise codebooks from a trained encoder). Quantizing from step 0, a
    fresh encoder's latents barely vary over time and training keeps them so: the tiny recipe codec ran
    at codebook perplexity 1.3-3 out of 256; after a 60-step warm-up, 25-75.
    """

    RANGES: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("waveform_l1", "stft", "mel", "quantizer", "adversarial", "feature_matching"), ">=0"),
        "quantizer_start": ">=0",
        "adversarial_start": ">=0",
        "stft_fft_sizes": ">=8",
        "mel_windows": ">=8",
        "mel_bands": ">=1",
    }

    waveform_l1: float = 0.1
    stft: float = 1.0
    mel: float = 15.0
    quantizer: float = 1.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    quantizer_start: int = 1000
    adversarial_start: int = 5000
    stft_fft_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024])
    mel_windows: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    mel_bands: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 128])


@dataclass
class DiscriminatorConfig:
    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    period_channels: list[int] = field(default_factory=lambda: [32, 128, 512, 1024])
    n_ffts: list[int] = field(default_factory=lambda: [1024, 512, 256, 128])
    stft_channels: int = 32


@dataclass
class OptimConfig:
    """AdamW for codec and discriminators (HiFi-GAN's betas); exponential LR decay per step (DAC)."""

    RANGES: ClassVar[dict[str, str]] = {
        "lr": ">0",
        "disc_lr": ">0",
        "betas": "[0, 1)",
        "weight_decay": ">=0",
        "lr_decay": "(0, 1]",
        "warmup_steps": ">=0",
        "grad_clip": ">0",
    }

    lr: float = 3e-4
    disc_lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    weight_decay: float = 0.0
    lr_decay: float = 0.999996
    warmup_steps: int = 0
    grad_clip: float = 1.0


@dataclass
class TrainerConfig:
    """Lightning flags and cadence. ``max_steps`` counts codec (generator) updates."""

    RANGES: ClassVar[dict[str, str]] = {
        "max_steps": ">=1",
        "val_every": ">=1",
        "checkpoint_every": ">=1",
        "log_every": ">=1",
        "num_nodes": ">=1",
        "num_audio_examples": ">=0",
    }

    max_steps: int = 200000
    val_every: int = 2000
    checkpoint_every: int = 1000
    log_every: int = 50
    accelerator: str = "auto"
    devices: str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    seed: int = 0
    num_audio_examples: int = 2


@dataclass
class ContentConfig:
    """A content objective on level 0 (training only; see :mod:`vqaudio.train.content`).

    Attributes:
        objective: ``"none"``, ``"ctc"`` (characters of the data dir's ``text``) or ``"kmeans"`` (per-frame
            targets of ``targets``).
        weight: its weight in the codec's loss.
        targets: ``kmeans``: a ``train-kmeans`` model or an earlier codec's ``model.pt`` (its level-0 units),
            at the codec's sample rate and hop. A missing file is trained first, as ``vqaudio train-kmeans``
            on the training data would (``kmeans_feature``, ``kmeans_k``, the codec's frame rate).
        kmeans_feature, kmeans_k, kmeans_deltas, kmeans_cmvn, kmeans_context: the features and size of targets
            trained that way (``train-kmeans``'s ``--feature``, ``--k``, ``--no-deltas``, ``--cmvn``, ``--context``).
        head_kernel: frames the head's first conv sees (odd). 1: each level-0 code alone predicts its
            frame's target.
        head_lstm: bidirectional LSTM layers in the head after its conv (0: none), so the head reads the
            whole utterance, as a recogniser does.
        batch_size: ``ctc``: transcribed utterances per step (whole, padded), besides the crops.
        max_seconds: ``ctc``: longer transcribed utterances train on reconstruction only.
    """

    RANGES: ClassVar[dict[str, str]] = {
        "weight": ">=0",
        "batch_size": ">=1",
        "max_seconds": ">0",
        "kmeans_k": ">=2",
        "kmeans_context": ">=0",
        "head_kernel": ">=1",
        "head_lstm": ">=0",
    }

    objective: str = "none"
    weight: float = 1.0
    targets: str | None = None
    kmeans_feature: str = "mfcc"
    kmeans_k: int = 256
    kmeans_deltas: bool = True
    kmeans_cmvn: bool = False
    kmeans_context: int = 0
    head_kernel: int = 3
    head_lstm: int = 0
    batch_size: int = 4
    max_seconds: float = 16.0


@dataclass
class TrainCodecConfig:
    model: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    content: ContentConfig = field(default_factory=ContentConfig)


@dataclass
class PriorDataConfig:
    """Attributes:
    segment_frames: random crop length of the unit sequences for training.
    batch_size: crops per batch.
    n_q: residual levels to model (default: all the units have; ``levels`` in configs before the rename).
    speakers: condition on the speaker of each utterance (from ``utt2spk``, else the id's prefix before
        the first ``-``, as in LibriSpeech ids). Id 0 stands for an unseen speaker.
    speaker_dropout: fraction of training crops given id 0, so that it learns to stand for any speaker.
    """

    RENAMED: ClassVar[dict[str, str]] = {"levels": "n_q"}
    RANGES: ClassVar[dict[str, str]] = {
        "segment_frames": ">=1",
        "batch_size": ">=1",
        "n_q": ">=1",
        "speaker_dropout": "[0, 1)",
    }

    segment_frames: int = 500
    batch_size: int = 16
    n_q: int | None = None
    speakers: bool = False
    speaker_dropout: float = 0.1


@dataclass
class PriorOptimConfig:
    RANGES: ClassVar[dict[str, str]] = {"lr": ">0", "weight_decay": ">=0", "grad_clip": ">0"}

    lr: float = 3e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0


@dataclass
class TrainPriorConfig:
    """``model`` is the prior's own config; its ``codebook_size``, ``n_q`` and speakers come from the units."""

    model: WaveNetConfig = field(default_factory=WaveNetConfig)
    data: PriorDataConfig = field(default_factory=PriorDataConfig)
    optim: PriorOptimConfig = field(default_factory=PriorOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
