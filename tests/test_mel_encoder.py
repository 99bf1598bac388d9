"""The frame-rate mel encoder: its frames are the iSTFT decoder's frames, its reach is what it says, a codec built on
it encodes alike whole, chunked, batched and streamed, trains end to end, and saves and loads."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from vqaudio.errors import UserError
from vqaudio.features import slaney_mel_filters
from vqaudio.models import Codec, CodecConfig
from vqaudio.models.codec import approx_parameters
from vqaudio.models.mel_encoder import LogMelFrames, MelEncoder

HOP = 8
SMALL = dict(
    strides=[2, 4],
    latent_dim=8,
    encoder="mel",
    encoder_dim=16,
    encoder_blocks=2,
    n_mels=6,
    lstm=0,
    decoder="istft",
    decoder_dim=8,
    decoder_blocks=1,
)


def small_codec(**kw) -> Codec:
    torch.manual_seed(0)
    return Codec(CodecConfig(**{**SMALL, **kw})).double().eval()


@pytest.mark.parametrize("causal", [False, True])
def test_log_mel_frames_are_hann_frames_centred_on_their_hop_or_ending_with_it(causal):
    """Non-causal, frame t is torch.stft's centred frame t (zeros, not reflections, beyond the ends); causal, it
    ends where its hop ends."""
    torch.manual_seed(0)
    codec = small_codec(causal=causal)
    wav = torch.randn(2, 1, 20 * HOP, dtype=torch.float64)
    frames = codec.encoder.net[0]
    n_fft = 4 * HOP
    window = torch.hann_window(n_fft, dtype=torch.float64)
    if causal:
        assert frames.pad == (n_fft - HOP, 0)
        ref = torch.fft.rfft(torch.nn.functional.pad(wav[:, 0], frames.pad).unfold(-1, n_fft, HOP) * window)
        ref = ref.transpose(1, 2)
    else:
        padded = torch.nn.functional.pad(wav[:, 0], (n_fft // 2, n_fft // 2))
        ref = torch.stft(padded, n_fft, HOP, window=window, center=False, return_complex=True)[..., :20]
    mel = torch.log10((frames.filters.double().T @ ref.abs()).clamp_min(1e-5))
    assert torch.allclose(frames(wav), mel, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_frame_context_is_the_reach_of_a_frame(causal):
    """Changing the samples of one hop moves exactly the latents within the reach frame_context states."""
    codec = small_codec(causal=causal)
    left, right = codec.encoder.frame_context()
    wav = torch.randn(1, 1, 60 * HOP, dtype=torch.float64)
    base = codec.encoder.infer(wav)
    changed = torch.zeros(60, dtype=torch.bool)
    for sample in range(30 * HOP, 31 * HOP):
        moved = wav.clone()
        moved[..., sample] += 1.0
        changed |= (codec.encoder.infer(moved) - base).abs().amax(1)[0] > 1e-12
    frames = changed.nonzero()[:, 0]
    assert frames.min() == 30 - right and frames.max() == 30 + left, (frames.tolist(), left, right)
    assert len(frames) == left + right + 1
    # encode_chunked takes ceil(receptive_field / hop) frames of context on each side: enough for either reach
    assert (left + right - 1) * HOP < codec.encoder.receptive_field <= (left + right + 1) * HOP


def test_encode_whole_chunked_and_batched_agree():
    codec = small_codec()
    torch.manual_seed(1)
    wavs = [torch.randn(n, dtype=torch.float64) * 0.1 for n in (37 * HOP + 3, 120 * HOP, 9 * HOP)]
    whole = [codec.encode(w[None, None]) for w in wavs]
    for got, ref in zip(codec.encode_batch(wavs), whole, strict=True):
        assert torch.equal(got, ref[0])
    for got, ref in zip(codec.encode_batch(wavs, batch_convs=True), whole, strict=True):
        assert torch.equal(got, ref[0])
    chunked = codec.encode_chunked(wavs[1][None, None], chunk_seconds=40 * HOP / codec.sample_rate)
    assert torch.equal(chunked, whole[1])


def test_a_causal_mel_codec_streams_as_it_encodes_offline():
    codec = small_codec(causal=True)
    torch.manual_seed(2)
    wav = torch.randn(2, 1, 30 * HOP, dtype=torch.float64) * 0.1
    state = codec.init_stream(batch=2)
    pieces = []
    for lo, hi in ((0, 7), (7, 8), (8, 30)):
        codes, state = codec.encode_step(wav[..., lo * HOP : hi * HOP], state)
        pieces.append(codes)
    assert torch.equal(torch.cat(pieces, -1), codec.encode(wav))
    with pytest.raises(ValueError, match="causal"):
        small_codec().init_stream()


def test_a_gradient_reaches_every_parameter_and_files_round_trip(tmp_path):
    codec = small_codec().train()
    wav = torch.randn(2, 1, 16 * HOP, dtype=torch.float64) * 0.1
    out = codec(wav, quantize=False)
    (out.wav.square().mean() + out.phase.square().mean()).backward()
    dead = [n for n, p in codec.named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, dead
    codec.eval().save_pretrained(tmp_path / "model.pt")
    loaded = Codec.from_pretrained(tmp_path / "model.pt").double()
    assert isinstance(loaded.encoder, MelEncoder)
    assert torch.equal(loaded.encode(wav), codec.encode(wav))


def test_parameter_estimate_and_bad_kinds():
    codec = small_codec()
    real = sum(p.numel() for n, p in codec.named_parameters() if p.ndim > 1 and "quantizer" not in n)
    assert math.isclose(approx_parameters(codec.config), real, rel_tol=0.05), (approx_parameters(codec.config), real)
    with pytest.raises(UserError, match="encoder must be one of"):
        Codec(CodecConfig(**{**SMALL, "encoder": "wav2vec"}))
    with pytest.raises(ValueError, match="multiple of 8"):
        codec.encoder(torch.zeros(1, 1, 12, dtype=torch.float64))
    assert isinstance(LogMelFrames(16000, 320, 80, causal=False).filters, torch.Tensor)


@pytest.mark.parametrize(
    "sample_rate, n_fft, n_mels, fmin, fmax",
    [
        (16000, 1280, 80, 0.0, None),
        (16000, 1024, 80, 0.0, 8000.0),
        (24000, 2048, 100, 50.0, 11000.0),
        (22050, 512, 40, 300.0, None),
    ],
)
def test_slaney_filters_equal_librosa_to_the_bit(sample_rate, n_fft, n_mels, fmin, fmax):
    librosa = pytest.importorskip("librosa")
    ours = slaney_mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    with pytest.raises(ValueError, match="fmin=9000"):
        slaney_mel_filters(sample_rate, n_fft, n_mels, 9000.0, 8000.0)


def test_building_and_running_the_default_codec_imports_neither_scipy_signal_nor_numba():
    """The start of a short extraction job: librosa.filters would import both (0.7-0.9 s)."""
    code = (
        "import sys, torch; from vqaudio import Codec; Codec().encode(torch.zeros(1, 1, 3200)); "
        "print(sorted(m for m in ('scipy.signal', 'numba', 'librosa.filters') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
