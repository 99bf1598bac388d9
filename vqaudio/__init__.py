"""vqaudio: speech to discrete units and back."""

import os

# oneDNN caches its conv primitives (and their memory) per input shape, 1024 by default. Layer by layer, unit
# extraction saw a new shape per utterance and the cache grew resident memory by ~29 MiB per shape, to 2.7 GiB
# on a 300-file job. CPU inference now runs in ten fixed window shapes (models/windows.py: ~310 primitives
# for batch-1 encode + decode), which 512 holds; it also bounds any layer-by-layer use. A value the user set
# wins. oneDNN reads it when it creates its first primitive, so this works after `import torch` too.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")

from ._version import __version__  # noqa: E402

__all__ = ["Codec", "CodecConfig", "__version__"]


def __getattr__(name: str):
    """``vqaudio.Codec`` and ``vqaudio.CodecConfig`` import torch on first use, so ``vqaudio --help`` and
    ``--version`` answer at once (PEP 562 module ``__getattr__``)."""
    if name in ("Codec", "CodecConfig"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'vqaudio' has no attribute {name!r}")
