"""Models: the SEANet encoder/decoder, the codec that joins them through a quantizer, the WaveNet prior, the unit
vocoder."""

from .codec import Codec, CodecConfig, CodecOutput
from .seanet import Decoder, Encoder
from .vocoder import Vocoder, VocoderConfig
from .wavenet import WaveNetConfig, WaveNetPrior

__all__ = [
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "Decoder",
    "Encoder",
    "Vocoder",
    "VocoderConfig",
    "WaveNetConfig",
    "WaveNetPrior",
]
