"""Models: the SEANet encoder/decoder and the codec that joins them through a quantizer."""

from .codec import Codec, CodecConfig, CodecOutput
from .seanet import Decoder, Encoder

__all__ = ["Codec", "CodecConfig", "CodecOutput", "Decoder", "Encoder"]
