"""Typed quantizer configuration and the factory that builds any quantizer (or residual stack) from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import UserError
from .base import Quantizer
from .ema import EMAVectorQuantizer
from .fsq import FSQ
from .residual import ResidualQuantizer
from .vq import VectorQuantizer

KINDS = ("vq", "ema", "fsq")


@dataclass
class QuantizerConfig:
    """Which quantizer a codec uses.

    Attributes:
        kind: ``"vq"`` (learned codebook), ``"ema"`` (EMA codebook) or ``"fsq"``.
        n_q: residual depth: 1 for a single quantizer, Q > 1 for a residual stack of Q alike stages
            (read from ``num_quantizers`` in configs written before the rename).
        codebook_size: codes per stage (VQ kinds); FSQ's size is ``prod(levels)``.
        levels: FSQ levels per channel.
        dropout: quantizer dropout in a residual stack (one model, every bitrate from 1 to Q stages).
        dropout_fraction: the share of training examples dropout applies to (uniform depth in [1, Q]); the
            rest train at full depth. 1.0 is SoundStream's rule, DAC's ``quantizer_dropout`` is 0.5.
        beta: commitment weight.
        decay: EMA decay (``ema``).
        distance: ``"l2"`` or ``"cosine"`` (``vq``).
        codebook_dim: factorized low-dimensional lookup (``vq``); ``None`` = latent dim.
        kmeans_init: k-means init from the first training batch (VQ kinds).
        normalize_first: instance-normalise the first level's input over time (speaker normalisation of
            level 0; the residual levels keep what it removes). Residual stacks only.
        dead_code_threshold: restart codes whose running count of assigned vectors per batch (summed over
            DDP ranks) falls below this (VQ kinds); 0 disables. Keep it well below the average
            ``frames_per_batch / codebook_size``, or live codes are restarted every step.
    """

    RENAMED: ClassVar[dict[str, str]] = {"num_quantizers": "n_q"}

    kind: str = "ema"
    n_q: int = 8
    codebook_size: int = 1024
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    dropout: bool = True
    dropout_fraction: float = 1.0
    beta: float = 0.25
    decay: float = 0.99
    distance: str = "l2"
    codebook_dim: int | None = None
    kmeans_init: bool = True
    dead_code_threshold: float = 0.5
    normalize_first: bool = False


def build_quantizer(cfg: QuantizerConfig, dim: int) -> Quantizer:
    """The quantizer ``cfg`` describes, over latents with ``dim`` channels."""
    if cfg.kind not in KINDS:
        raise UserError(f"quantizer kind must be one of {KINDS}, got {cfg.kind!r}")
    if cfg.n_q < 1:
        raise UserError(f"n_q must be >= 1, got {cfg.n_q}")

    def make() -> Quantizer:
        if cfg.kind == "fsq":
            return FSQ(cfg.levels, dim=dim)
        if cfg.kind == "ema":
            return EMAVectorQuantizer(
                dim,
                cfg.codebook_size,
                beta=cfg.beta,
                decay=cfg.decay,
                kmeans_init=cfg.kmeans_init,
                dead_code_threshold=cfg.dead_code_threshold,
            )
        return VectorQuantizer(
            dim,
            cfg.codebook_size,
            beta=cfg.beta,
            distance=cfg.distance,
            codebook_dim=cfg.codebook_dim,
            kmeans_init=cfg.kmeans_init,
            dead_code_threshold=cfg.dead_code_threshold,
        )

    if cfg.n_q == 1:
        if cfg.normalize_first:
            raise UserError("normalize_first needs a residual stack (n_q > 1): level 0 alone would lose the speaker")
        return make()
    return ResidualQuantizer.alike(
        cfg.n_q, make, dropout=cfg.dropout, normalize_first=cfg.normalize_first, dropout_fraction=cfg.dropout_fraction
    )
