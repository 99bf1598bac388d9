"""vqaudio: speech to discrete units and back."""

__version__ = "0.1.0"
