"""Streaming a causal codec: chunked encode/decode equal the offline pass for every chunking, states are
functional, and what cannot stream says so."""

from __future__ import annotations

import random

import pytest
import torch

from vqaudio.models import Codec, CodecConfig
from vqaudio.quantize import QuantizerConfig

CONFIGS = [
    dict(),
    dict(strides=[2, 3], dilations=[1, 2], activation="snake", residual_out_kernel=3, weight_norm=False),
    dict(strides=[4, 2, 2], kernel=5, residual_kernel=5, activation="leaky_relu"),
    dict(strides=[2, 3], dilations=[1], activation="snake", lstm=2),
    dict(strides=[2, 3], dilations=[1], activation="snake", lstm=1, lstm_dim=20),
    dict(strides=[2, 3], decoder="istft", decoder_dim=12, decoder_blocks=2),
    dict(strides=[4, 2, 2], decoder="istft", decoder_dim=8, decoder_blocks=3, decoder_kernel=5, lstm=1, lstm_dim=20),
]


def causal_codec(seed: int, **arch) -> Codec:
    torch.manual_seed(seed)
    q = QuantizerConfig(kind="vq", n_q=3, codebook_size=32, kmeans_init=False, dead_code_threshold=0.0)
    base = dict(channels=4, encoder_channels=4, latent_dim=8, max_channels=16, causal=True, quantizer=q, lstm=0)
    base.update(decoder="seanet", decoder_lstm=True)  # the LSTM on both sides when ``lstm``
    codec = Codec(CodecConfig(encoder="seanet", **{**base, **arch})).double().eval()
    with torch.no_grad():  # non-zero biases, so a wrongly doubled or dropped bias shows
        for m in codec.modules():
            if isinstance(getattr(m, "bias", None), torch.Tensor):  # (an LSTM's ``bias`` is a flag)
                m.bias.normal_(0, 0.1)
    return codec


def chunks(total: int, seed: int) -> list[int]:
    rng, out = random.Random(seed), []
    while total:
        out.append(min(total, rng.choice([1, 1, 2, 3, 7])))
        total -= out[-1]
    return out


@pytest.mark.parametrize("arch", range(len(CONFIGS)))
@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_codes_and_audio_equal_the_offline_pass(arch, seed):
    codec = causal_codec(seed, **CONFIGS[arch])
    hop, frames = codec.hop_length, 23
    wav = torch.randn(2, 1, frames * hop, dtype=torch.float64) * 0.3
    codes = codec.encode(wav)
    out = codec.decode(codes)
    state = codec.init_stream(batch=2)
    got_codes, got_wav, t = [], [], 0
    for n in chunks(frames, seed + 10 * arch):
        c, state = codec.encode_step(wav[..., t * hop : (t + n) * hop], state)
        got_codes.append(c)
        t += n
    assert torch.equal(torch.cat(got_codes, -1), codes)
    t = 0
    for n in chunks(frames, seed + 100):
        w, state = codec.decode_step(codes[..., t : t + n], state)
        got_wav.append(w)
        t += n
    assert torch.allclose(torch.cat(got_wav, -1), out, atol=1e-10)


@pytest.mark.parametrize("lstm", [0, 1])
def test_states_are_functional_and_the_context_manager_keeps_one(lstm):
    codec = causal_codec(3, lstm=lstm)
    hop = codec.hop_length
    wav = torch.randn(1, 1, 6 * hop, dtype=torch.float64)
    s0 = codec.init_stream()
    _, s1 = codec.encode_step(wav[..., : 3 * hop], s0)
    a, _ = codec.encode_step(wav[..., 3 * hop :], s1)
    b, _ = codec.encode_step(wav[..., 3 * hop :], s1)  # the same state again: the same codes
    assert torch.equal(a, b)
    with codec.streaming() as stream:
        codes = torch.cat([stream.encode(wav[..., i * hop : (i + 1) * hop]) for i in range(6)], -1)
        audio = torch.cat([stream.decode(codes[..., i : i + 1]) for i in range(6)], -1)
    assert torch.equal(codes, codec.encode(wav))
    assert torch.allclose(audio, codec.decode(codes), atol=1e-10)


def test_what_cannot_stream_says_so():
    torch.manual_seed(0)
    for decoder in ("seanet", "istft"):
        cfg = CodecConfig(
            encoder="seanet", channels=4, encoder_channels=4, latent_dim=8, max_channels=16, decoder=decoder
        )
        with pytest.raises(ValueError, match="causal"):
            Codec(cfg).init_stream()
    codec = causal_codec(0)
    with pytest.raises(ValueError, match="whole number of hops"):
        codec.encode_step(torch.zeros(1, 1, codec.hop_length + 1, dtype=torch.float64), codec.init_stream())
