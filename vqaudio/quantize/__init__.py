"""Quantizers over latents ``(B, D, T)``: VQ, EMA-VQ, FSQ and residual stacks of any of them."""

from .base import Quantizer, QuantizerOutput
from .ema import EMAVectorQuantizer
from .factory import QuantizerConfig, build_quantizer
from .fsq import FSQ
from .residual import ResidualQuantizer
from .vq import VectorQuantizer

__all__ = [
    "EMAVectorQuantizer",
    "FSQ",
    "Quantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "ResidualQuantizer",
    "VectorQuantizer",
    "build_quantizer",
]
