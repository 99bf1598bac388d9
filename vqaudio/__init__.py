"""vqaudio: speech to discrete units and back."""

from .models import Codec, CodecConfig

__version__ = "0.1.0"

__all__ = ["Codec", "CodecConfig", "__version__"]
