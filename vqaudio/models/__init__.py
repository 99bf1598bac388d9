"""Models: the SEANet encoder/decoder, the codec that joins them through a quantizer, the WaveNet prior."""

from .codec import Codec, CodecConfig, CodecOutput
from .seanet import Decoder, Encoder
from .wavenet import WaveNetConfig, WaveNetPrior

__all__ = ["Codec", "CodecConfig", "CodecOutput", "Decoder", "Encoder", "WaveNetConfig", "WaveNetPrior"]
