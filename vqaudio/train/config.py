"""Typed training configs for ``vqaudio train-codec``, ``train-prior`` and ``train-ssl`` (YAML <-> dataclasses)."""

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
class ReconstructionLossConfig:
    """Loss weights of anything that makes a waveform (EnCodec/DAC-style: L1, multi-resolution STFT,
    multi-scale mel, adversarial with feature matching) and when the adversarial terms switch on. The
    vocoder's ``loss`` section as it is; the codec's adds the quantizer (:class:`LossConfig`).

    ``phase``: weight of APNet's anti-wrapping phase losses (:func:`~vqaudio.train.losses.phase_loss`) between
    an iSTFT decoder's phase and the target's STFT phase over the same frames; 0 for none (a SEANet decoder
    has no phase to compare)."""

    RANGES: ClassVar[dict[str, str]] = {
        **dict.fromkeys(("waveform_l1", "stft", "mel", "phase", "adversarial", "feature_matching"), ">=0"),
        "adversarial_start": ">=0",
        "stft_fft_sizes": ">=8",
        "mel_windows": ">=8",
        "mel_bands": ">=1",
    }

    waveform_l1: float = 0.1
    stft: float = 1.0
    mel: float = 15.0
    phase: float = 0.0
    adversarial: float = 1.0
    feature_matching: float = 2.0
    adversarial_start: int = 5000
    stft_fft_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024])
    mel_windows: list[int] = field(default_factory=lambda: [64, 128, 256, 512, 1024, 2048])
    mel_bands: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 128])


@dataclass
class LossConfig(ReconstructionLossConfig):
    """The codec's loss weights: :class:`ReconstructionLossConfig`'s, the quantizer's, and when quantization
    switches on.

    ``quantizer_start``: codec steps trained as a continuous autoencoder (latents straight to the
    decoder) before the quantizer switches on and k-means-initialises its codes on the trained latents
    (as Łańcucki et al. 2020 initialise codebooks from a trained encoder). Quantizing from step 0, a
    fresh encoder's latents barely vary over time and training keeps them so: the tiny recipe codec ran
    at codebook perplexity 1.3-3 out of 256; after a 60-step warm-up, 25-75.
    """

    RANGES: ClassVar[dict[str, str]] = {
        **ReconstructionLossConfig.RANGES,
        "quantizer": ">=0",
        "quantizer_start": ">=0",
    }

    quantizer: float = 1.0
    quantizer_start: int = 1000


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
        objective: ``"none"``, ``"ctc"`` (characters of the data dir's ``text``), ``"kmeans"`` (per-frame
            targets of ``targets``) or ``"distill"`` (cosine toward ``teacher``'s frames).
        weight: its weight in the codec's loss.
        targets: ``kmeans``: a ``train-kmeans`` model or an earlier codec's ``model.pt`` (its level-0 units),
            at the codec's sample rate and hop. A missing file is trained first, as ``vqaudio train-kmeans``
            on the training data would (``kmeans_feature``, ``kmeans_k``, the codec's frame rate).
        kmeans_feature, kmeans_k, kmeans_deltas, kmeans_cmvn, kmeans_context: the features and size of targets
            trained that way (``train-kmeans``'s ``--feature``, ``--k``, ``--no-deltas``, ``--cmvn``, ``--context``).
        teacher: ``distill``: ``"mfcc"`` or ``"logmel"`` (spectral features at the codec's frames, with
            ``teacher_deltas``, ``teacher_cmvn`` and ``teacher_context`` as ``train-kmeans`` computes them; the
            default is the CMVN-spliced MFCCs), or an SSL model folder (e.g. ``train-ssl``'s) or Hub id.
        teacher_layers: ``distill`` from an SSL model: its layers, averaged when several.
        teacher_deltas, teacher_cmvn, teacher_context: ``distill`` from spectral features.
        distill_form: ``"frame"`` (1 - cosine per frame, Mimi) or ``"dim"`` (SpeechTokenizer's per-dimension
            cosine over time through ``-log sigmoid``).
        cache_dir: ``distill``: where teacher features are kept (per teacher identity and audio); default
            ``teacher_cache`` in the experiment dir.
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
        "teacher_layers": ">=0",
        "teacher_context": ">=0",
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
    teacher: str = "mfcc"
    teacher_layers: list[int] = field(default_factory=lambda: [6])
    teacher_deltas: bool = False
    teacher_cmvn: bool = True
    teacher_context: int = 2
    distill_form: str = "frame"
    cache_dir: str | None = None
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


@dataclass
class SSLModelConfig:
    """A HuBERT (``transformers.HubertModel``) trained from scratch by ``vqaudio train-ssl``; the conv feature
    encoder is HuBERT's (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2: hop 320, receptive field 400).

    Attributes:
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the transformer.
        conv_dim: channels of each of the 7 conv layers (HuBERT-base: 512).
        feat_extract_norm: ``"group"`` (HuBERT-base: group norm in the first conv layer, no input normalisation)
            or ``"layer"`` (HuBERT-large: layer norm in every conv layer, inputs normalised per utterance).
        num_conv_pos_embeddings, num_conv_pos_embedding_groups: the convolutional position embedding.
        layerdrop: probability of skipping a transformer layer in training (fairseq's ``encoder_layerdrop``).
        dropout: hidden, attention and feature-projection dropout.
        final_dim: width of the projection compared with the unit embeddings (HuBERT's ``final_dim``).
        logit_temp: the cosine logits are divided by it (HuBERT's ``logit_temp``, 0.1).
        feature_grad_mult: gradient scale into the conv feature encoder (HuBERT's ``feature_grad_mult``, 0.1).
    """

    RANGES: ClassVar[dict[str, str]] = {
        "hidden_size": ">=1",
        "num_hidden_layers": ">=1",
        "num_attention_heads": ">=1",
        "intermediate_size": ">=1",
        "conv_dim": ">=1",
        "num_conv_pos_embeddings": ">=2",
        "num_conv_pos_embedding_groups": ">=1",
        "layerdrop": "[0, 1)",
        "dropout": "[0, 1)",
        "final_dim": ">=1",
        "logit_temp": ">0",
        "feature_grad_mult": "[0, 1]",
    }

    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 768
    conv_dim: int = 256
    feat_extract_norm: str = "group"
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    layerdrop: float = 0.05
    dropout: float = 0.1
    final_dim: int = 256
    logit_temp: float = 0.1
    feature_grad_mult: float = 0.1


@dataclass
class SSLMaskConfig:
    """Span masking of the transformer's input frames (HuBERT: ``mask_prob`` 0.8, ``mask_length`` 10): about
    ``prob * frames / length`` spans of ``length`` frames start at random frames (they may overlap), so somewhat
    less than ``prob`` of the frames end up masked."""

    RANGES: ClassVar[dict[str, str]] = {"prob": "[0, 1]", "length": ">=1", "unmasked_weight": ">=0"}

    prob: float = 0.8
    length: int = 10
    unmasked_weight: float = 0.0


@dataclass
class SSLDataConfig:
    """Attributes:
    targets: the unit model whose units are predicted (iteration 1: ``train-kmeans`` on MFCCs; iteration 2:
        ``train-kmeans --feature ssl`` over a layer of the iteration-1 model), at the model's 16 kHz and hop 320.
    segment_seconds: random crop length for training.
    batch_size: crops per batch (per device).
    num_workers: DataLoader worker processes.
    valid_max_utts: validation utterances used (the first ones in sorted order).
    valid_max_seconds: validation crops (first seconds of each utterance).
    """

    RANGES: ClassVar[dict[str, str]] = {
        "segment_seconds": ">0",
        "batch_size": ">=1",
        "num_workers": ">=0",
        "valid_max_utts": ">=1",
        "valid_max_seconds": ">0",
    }

    targets: str | None = None
    segment_seconds: float = 2.0
    batch_size: int = 8
    num_workers: int = 0
    valid_max_utts: int = 16
    valid_max_seconds: float = 4.0


@dataclass
class SSLOptimConfig:
    """AdamW with linear warm-up to ``lr`` and linear decay to 0 at ``trainer.max_steps`` (HuBERT's
    polynomial-decay schedule with power 1; betas 0.9/0.98, weight decay 0.01)."""

    RANGES: ClassVar[dict[str, str]] = {
        "lr": ">0",
        "betas": "[0, 1)",
        "weight_decay": ">=0",
        "warmup_steps": ">=0",
        "grad_clip": ">0",
    }

    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.01
    warmup_steps: int = 1000
    grad_clip: float = 10.0


@dataclass
class TrainSSLConfig:
    """``vqaudio train-ssl``: HuBERT-style masked prediction of a unit model's units."""

    model: SSLModelConfig = field(default_factory=SSLModelConfig)
    mask: SSLMaskConfig = field(default_factory=SSLMaskConfig)
    data: SSLDataConfig = field(default_factory=SSLDataConfig)
    optim: SSLOptimConfig = field(default_factory=SSLOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


from ..models.vocoder import VocoderConfig  # noqa: E402  (the vocoder's configs, kept together here)


@dataclass
class VocoderDataConfig:
    """Attributes:
    segment_frames: random crop length in unit frames (the audio crop is ``segment_frames * hop`` samples,
        aligned with it).
    batch_size: crops per batch (per device).
    num_workers: DataLoader worker processes.
    holdout: without a validation set, this many training utterances (the last in sorted order) are held out.
    valid_max_utts: validation utterances used (the first ones in sorted order).
    valid_max_seconds: validation utterances are cut to this length.
    speaker_embeddings: ``model.speaker: external``: the Kaldi-style table (``utt_or_spk v1 v2 ...``); without
        it, Resemblyzer GE2E embeddings of each training utterance are computed into the experiment dir.
    f0_cache: where per-utterance F0 tracks are kept; default ``f0_cache`` in the experiment dir.
    audio_cache_mb: decoded training audio kept in memory per DataLoader worker (least recently used first out),
        so a random crop does not decode its whole file again; 0 decodes every crop's file anew.
    """

    RANGES: ClassVar[dict[str, str]] = {
        "segment_frames": ">=1",
        "batch_size": ">=1",
        "num_workers": ">=0",
        "holdout": ">=1",
        "valid_max_utts": ">=1",
        "valid_max_seconds": ">0",
        "audio_cache_mb": ">=0",
    }

    segment_frames: int = 50
    batch_size: int = 16
    num_workers: int = 2
    holdout: int = 2
    valid_max_utts: int = 8
    valid_max_seconds: float = 6.0
    speaker_embeddings: str | None = None
    f0_cache: str | None = None
    audio_cache_mb: float = 1024.0


@dataclass
class TrainVocoderConfig:
    """``vqaudio train-vocoder``: a unit vocoder (``model``) with the codec's discriminators, losses and optimiser.

    Attributes:
        init_decoder: a codec (model file or folder) whose decoder starts the vocoder's: the decoder fields of
            ``model`` (kind, widths, strides, ``latent_dim``...) are taken from it and its weights loaded before
            the first update; ``None`` starts from scratch.
    """

    model: VocoderConfig = field(default_factory=VocoderConfig)
    data: VocoderDataConfig = field(default_factory=VocoderDataConfig)
    loss: ReconstructionLossConfig = field(default_factory=ReconstructionLossConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    init_decoder: str | None = None
