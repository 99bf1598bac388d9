"""Training: losses, discriminators, configs and the Lightning glue (kept apart from the models)."""

from .config import TrainCodecConfig
from .losses import MultiResolutionSTFTLoss, MultiScaleMelLoss

__all__ = ["MultiResolutionSTFTLoss", "MultiScaleMelLoss", "TrainCodecConfig"]
