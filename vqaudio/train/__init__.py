"""Training: losses, discriminators, configs and the Lightning glue (kept apart from the models)."""

from .config import TrainCodecConfig
from .losses import MelSpectrogram, MultiResolutionSTFTLoss, MultiScaleMelLoss

__all__ = ["MelSpectrogram", "MultiResolutionSTFTLoss", "MultiScaleMelLoss", "TrainCodecConfig"]
