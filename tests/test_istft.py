"""The iSTFT decoder: its inverse STFT inverts an STFT, the ONNX form equals the FFT form, a gradient reaches
every stage of a codec and a vocoder built on it, and model files that predate the decoder kinds load as SEANet."""

from __future__ import annotations

import json

import pytest
import torch

from vqaudio.checkpoint import with_earlier_defaults
from vqaudio.errors import UserError
from vqaudio.models import Codec, CodecConfig, Vocoder, VocoderConfig
from vqaudio.models.codec import approx_parameters
from vqaudio.models.istft import InverseSTFT, IstftDecoder
from vqaudio.models.seanet import Decoder
from vqaudio.quantize import QuantizerConfig

SMALL = dict(channels=4, encoder_channels=4, latent_dim=16, max_channels=16, lstm=0, decoder="istft")


def stft(x: torch.Tensor, n_fft: int, hop: int, shift: int) -> torch.Tensor:
    """``(B, N)`` -> ``(B, 2, n_fft / 2 + 1, T)``: frame t starts at sample ``t * hop - shift``, Hann-windowed."""
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype)
    padded = torch.nn.functional.pad(x, (shift, n_fft))
    frames = padded.unfold(-1, n_fft, hop)[:, : x.shape[-1] // hop]  # (B, T, n_fft)
    spec = torch.fft.rfft(frames * window, dim=-1)
    return torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)


@pytest.mark.parametrize("causal", [False, True])
def test_inverse_stft_inverts_a_hann_stft_where_the_frames_overlap_fully(causal):
    torch.manual_seed(0)
    hop, frames = 8, 40
    istft = InverseSTFT(4 * hop, hop, causal).double()
    x = torch.randn(2, frames * hop, dtype=torch.float64)
    y = istft(stft(x, 4 * hop, hop, istft.shift))
    assert y.shape == (2, 1, frames * hop)
    # every sample at least n_fft from both ends sees four frames: the window envelope is the constant there
    inner = slice(4 * hop, (frames - 4) * hop)
    assert torch.allclose(y[:, 0, inner], x[:, inner], atol=1e-10)
    assert not torch.allclose(y[:, 0, : hop // 2], x[:, : hop // 2], atol=1e-3)  # the edges are not whole


@pytest.mark.parametrize("n_fft,hop", [(1280, 320), (24, 6), (64, 16)])
def test_the_onnx_form_of_the_inverse_dft_equals_irfft(n_fft, hop, monkeypatch):
    torch.manual_seed(0)
    istft = InverseSTFT(n_fft, hop, causal=False).double()
    spec = torch.randn(2, 2, n_fft // 2 + 1, 5, dtype=torch.float64)
    fft = istft(spec)
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    assert torch.allclose(istft(spec), fft, atol=1e-12)


def test_bad_frame_sizes_are_refused():
    with pytest.raises(UserError, match="whole multiple"):
        InverseSTFT(30, 8, causal=False)


def test_a_gradient_reaches_every_parameter_of_an_istft_codec():
    torch.manual_seed(0)
    q = QuantizerConfig(kind="vq", n_q=2, codebook_size=16, kmeans_init=False)
    codec = Codec(CodecConfig(**{**SMALL, "lstm": 1, "lstm_dim": 12}, strides=[2, 4], quantizer=q))
    assert isinstance(codec.decoder, IstftDecoder) and codec.decoder.n_fft == 32
    wav = torch.randn(2, 1, 83) * 0.2
    out = codec(wav)
    assert out.wav.shape == wav.shape
    (out.wav.square().mean() + out.quantizer_loss).backward()
    missing = [n for n, p in codec.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing


def test_decoder_lstm_off_leaves_the_encoder_its_lstm():
    codec = Codec(CodecConfig(**{**SMALL, "lstm": 1, "lstm_dim": 12}, decoder_lstm=False))
    assert codec.encoder_lstm is not None and codec.decoder_lstm is None
    actual = sum(p.numel() for n, p in codec.named_parameters() if "bias" not in n and "alpha" not in n)
    assert abs(approx_parameters(codec.config) - actual) < 0.05 * actual


def test_codec_decode_and_save_round_trip(tmp_path):
    torch.manual_seed(0)
    codec = Codec(CodecConfig(**SMALL, strides=[2, 4])).eval()
    codes = codec.encode(torch.randn(1, 1, 400) * 0.1)
    wav = codec.decode(codes, length=400)
    loaded = Codec.from_pretrained(codec.save_pretrained(tmp_path / "m"))
    assert isinstance(loaded.decoder, IstftDecoder)
    assert torch.equal(loaded.decode(codes, length=400), wav)
    with torch.no_grad():  # infer and forward are one network
        assert torch.allclose(codec.decoder.infer(codec._latents(codes)), codec.decoder(codec._latents(codes)))


def test_files_without_a_decoder_kind_are_seanet(tmp_path):
    assert with_earlier_defaults("codec", 3, {})["decoder"] == "seanet"
    assert with_earlier_defaults("codec", 3, {})["decoder_lstm"] is True
    assert with_earlier_defaults("vocoder", 3, {})["decoder"] == "seanet"
    assert "decoder" not in with_earlier_defaults("codec", 4, {})
    arch = dict(channels=4, encoder_channels=4, latent_dim=8, max_channels=16, lstm=1, lstm_dim=8)
    codec = Codec(CodecConfig(**arch, decoder="seanet", decoder_lstm=True))
    folder = codec.save_pretrained(tmp_path / "old")
    meta = json.loads((folder / "config.json").read_text())
    meta["version"] = 3
    for key in ("decoder", "decoder_dim", "decoder_blocks", "decoder_hidden", "decoder_kernel", "decoder_lstm"):
        del meta["config"][key]
    (folder / "config.json").write_text(json.dumps(meta))
    loaded = Codec.from_pretrained(folder)
    assert isinstance(loaded.decoder, Decoder) and loaded.decoder_lstm is not None


def test_an_unknown_decoder_kind_is_one_line():
    with pytest.raises(UserError, match="decoder must be one of"):
        Codec(CodecConfig(**{**SMALL, "decoder": "hifigan"}))
    with pytest.raises(UserError, match="decoder must be one of"):
        VocoderConfig(decoder="hifigan")


def test_a_vocoder_with_an_istft_decoder_trains_every_stage():
    torch.manual_seed(0)
    cfg = VocoderConfig(
        hop_length=8,
        strides=[2, 4],
        codebook_size=10,
        embed_dim=8,
        prenet_channels=8,
        latent_dim=8,
        speaker="table",
        speakers=["a", "b"],
        speaker_dim=4,
        decoder="istft",
        decoder_dim=8,
        decoder_blocks=2,
    )
    vocoder = Vocoder(cfg)
    units = torch.randint(0, 10, (2, 1, 12))
    wav = vocoder(units, torch.tensor([0, 1]))
    assert wav.shape == (2, 1, 12 * 8)
    wav.square().mean().backward()
    dead = [n for n, p in vocoder.named_parameters() if p.grad is None and "null_speaker" not in n]
    assert not dead, dead
