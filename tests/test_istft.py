"""The iSTFT decoder: its inverse STFT inverts an STFT, the ONNX form equals the FFT form, a gradient reaches
every stage of a codec and a vocoder built on it, and model files that predate the decoder kinds load as SEANet."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
import torch

from vqaudio.checkpoint import with_earlier_defaults
from vqaudio.errors import UserError
from vqaudio.models import Codec, CodecConfig, Vocoder, VocoderConfig
from vqaudio.models.codec import approx_parameters
from vqaudio.models.istft import InverseSTFT, IstftDecoder
from vqaudio.models.seanet import Decoder
from vqaudio.quantize import QuantizerConfig
from vqaudio.train.losses import anti_wrap, phase_loss

TINY = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "librispeech" / "conf" / "codec_tiny.yaml"
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
    codec = Codec(CodecConfig(encoder="seanet", **{**SMALL, "lstm": 1, "lstm_dim": 12}, strides=[2, 4], quantizer=q))
    assert isinstance(codec.decoder, IstftDecoder) and codec.decoder.n_fft == 32
    wav = torch.randn(2, 1, 83) * 0.2
    out = codec(wav)
    assert out.wav.shape == wav.shape
    (out.wav.square().mean() + out.quantizer_loss).backward()
    missing = [n for n, p in codec.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing, missing


def test_decoder_lstm_off_leaves_the_encoder_its_lstm():
    codec = Codec(CodecConfig(encoder="seanet", **{**SMALL, "lstm": 1, "lstm_dim": 12}, decoder_lstm=False))
    assert codec.encoder_lstm is not None and codec.decoder_lstm is None
    actual = sum(p.numel() for n, p in codec.named_parameters() if "bias" not in n and "alpha" not in n)
    assert abs(approx_parameters(codec.config) - actual) < 0.05 * actual


def test_codec_decode_and_save_round_trip(tmp_path):
    torch.manual_seed(0)
    codec = Codec(CodecConfig(encoder="seanet", **SMALL, strides=[2, 4])).eval()
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
    codec = Codec(CodecConfig(encoder="seanet", **arch, decoder="seanet", decoder_lstm=True))
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
        Codec(CodecConfig(encoder="seanet", **{**SMALL, "decoder": "hifigan"}))
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
    # what the vocoder's training step reads: the same waveform and the decoder's phase over its frames
    vocoder.eval()
    same, phase = vocoder.forward_with_phase(units, torch.tensor([0, 1]))
    assert torch.equal(same, vocoder(units, torch.tensor([0, 1]))) and phase.shape == (2, 4 * 8 // 2 + 1, 12)


@pytest.mark.parametrize("causal", [False, True])
def test_frame_phase_is_the_phase_of_the_frames_the_inverse_stft_overlap_adds(causal):
    torch.manual_seed(0)
    hop = 8
    decoder = IstftDecoder(hop_length=hop, latent_dim=4, dim=8, blocks=1, causal=causal).double()
    x = torch.randn(2, 1, 40 * hop + 3, dtype=torch.float64)  # not a whole number of frames: zeros complete it
    phase = decoder.frame_phase(x)
    assert phase.shape == (2, 4 * hop // 2 + 1, 41)
    spec = stft(torch.nn.functional.pad(x[:, 0], (0, hop - 3)), 4 * hop, hop, decoder.net[-1].shift)
    assert torch.allclose(phase, torch.atan2(spec[:, 1], spec[:, 0]), atol=1e-12)
    # the frames it describes are the ones the decoder's inverse STFT puts back in place
    y = decoder.net[-1](spec)[..., : 40 * hop]
    inner = slice(4 * hop, 36 * hop)
    assert torch.allclose(y[:, 0, inner], x[:, 0, inner], atol=1e-10)


def test_forward_with_phase_is_forward_and_its_phase_feeds_the_spectrum():
    torch.manual_seed(0)
    decoder = IstftDecoder(hop_length=8, latent_dim=4, dim=8, blocks=1).double()
    z = torch.randn(2, 4, 10, dtype=torch.float64)
    wav, phase = decoder.forward_with_phase(z)
    assert torch.equal(wav, decoder(z)) and phase.shape == (2, 17, 10)
    phase.sum().backward()  # the phase is the head's own output, with a gradient to the backbone
    assert decoder.net[0].conv.weight.grad.abs().sum() > 0


def test_phase_loss_is_zero_for_equal_phases_and_blind_to_whole_turns():
    torch.manual_seed(0)
    target = torch.rand(2, 9, 7, dtype=torch.float64) * 6 - 3
    assert phase_loss(target, target) == 0
    turns = torch.randint(-3, 4, target.shape, dtype=torch.float64)
    assert phase_loss(target + 2 * math.pi * turns, target) < 1e-12
    # a constant offset: every instantaneous phase is pi off; its differences along frequency and time are exact
    assert abs(phase_loss(target + math.pi, target).item() - math.pi) < 1e-12
    # a ramp of 0.5 rad per frame: the time differences are 0.5 off, the frequency differences exact
    ramp = 0.5 * torch.arange(7, dtype=torch.float64)
    expected = anti_wrap(ramp).mean().item() + 0.5
    assert abs(phase_loss(target + ramp, target).item() - expected) < 1e-12
    with pytest.raises(ValueError, match=r"\(2, 9, 7\) and \(2, 9, 6\)"):
        phase_loss(target, target[..., :6])


def test_the_phase_loss_alone_trains_the_codec_from_encoder_to_head():
    import yaml

    from vqaudio.train.codec_task import CodecTask

    cfg = yaml.safe_load(TINY.read_text())
    cfg["loss"].update(waveform_l1=0.0, stft=0.0, mel=0.0, phase=1.0)
    task = CodecTask(cfg)
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(2, 1, 4 * task.codec.hop_length)
    out = task.codec(wav, quantize=False)
    logs = {}
    task.reconstruction_loss(out.wav, wav, logs, out.phase, task.codec.decoder).backward()
    assert 0 < logs["train/phase"] < 3 * math.pi
    head = task.codec.decoder.net[-2].out.weight
    first = next(p for n, p in task.codec.named_parameters() if n.startswith("encoder"))
    assert head.grad.abs().sum() > 0 and first.grad.abs().sum() > 0
    cfg["model"].update(decoder="seanet")
    seanet = CodecTask(cfg)
    out = seanet.codec(wav, quantize=False)
    assert out.phase is None
    with pytest.raises(UserError, match="loss.phase needs an iSTFT decoder"):
        seanet.reconstruction_loss(out.wav, wav, {}, out.phase, seanet.codec.decoder)
