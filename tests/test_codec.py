"""The codec: length round trips, causality, gradients, save/load, bad input, and learning real speech."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.models import Codec, CodecConfig, Decoder, Encoder
from vqaudio.quantize import QuantizerConfig

from .speech import one_utterance

STRIDE_SETS = [[2, 4, 5, 8], [8, 5, 4, 2], [2, 2], [3], [4, 4, 4], [1, 2]]


def tiny(strides=(2, 4, 5, 8), causal=False, kind="ema", nq=2, lstm=0, **kw) -> Codec:
    q = QuantizerConfig(
        kind=kind, n_q=nq, codebook_size=32, kmeans_init=False, dead_code_threshold=0.0, levels=[4, 4, 2]
    )
    return Codec(
        CodecConfig(
            encoder="seanet",
            channels=4,
            encoder_channels=4,
            strides=list(strides),
            latent_dim=8,
            causal=causal,
            quantizer=q,
            dilations=[1, 3],
            max_channels=16,
            lstm=lstm,
            **{"decoder_dim": 16, "decoder_blocks": 2, **kw},
        )
    )


@pytest.mark.parametrize("strides", STRIDE_SETS)
@pytest.mark.parametrize("causal", [False, True])
def test_any_length_round_trips_to_exactly_t_samples(strides, causal):
    codec = tiny(strides, causal).eval()
    hop = math.prod(strides)
    for length in sorted({1, hop - 1, hop, hop + 1, 3 * hop + 7, 1000}):
        wav = torch.randn(2, 1, length) * 0.1
        idx = codec.encode(wav)
        assert idx.shape == (2, codec.n_q, math.ceil(length / hop)), (length, idx.shape)
        out = codec.decode(idx, length=length)
        assert out.shape == (2, 1, length)
        assert codec(wav).wav.shape == (2, 1, length)
        assert codec.decode(idx).shape == (2, 1, idx.shape[-1] * hop)


def test_default_codec_properties():
    codec = Codec()
    assert codec.sample_rate == 16000 and codec.hop_length == 320 and codec.frame_rate == 50.0
    assert codec.n_q == 8 and codec.codebook_size == 1024
    assert codec.bitrate == pytest.approx(50 * 8 * 10)
    assert Codec.from_config({"quantizer": {"num_quantizers": 2}}).bitrate == pytest.approx(1000.0)


def test_causal_encoder_and_decoder_ignore_the_future():
    torch.manual_seed(0)
    codec = tiny(causal=True).eval()
    hop = codec.hop_length
    wav = torch.randn(1, 1, 12 * hop)
    cut = 5 * hop + 100
    changed = wav.clone()
    changed[..., cut:] = torch.randn(1, 1, wav.shape[-1] - cut)
    z1, z2 = codec.encoder(wav), codec.encoder(changed)
    done = cut // hop  # frames i with (i + 1) * hop <= cut
    assert torch.equal(z1[..., :done], z2[..., :done])
    assert not torch.allclose(z1[..., done:], z2[..., done:])
    lat = torch.randn(1, 8, 12)
    lat2 = lat.clone()
    lat2[..., 7:] = torch.randn(1, 8, 5)
    y1, y2 = codec.decoder(lat), codec.decoder(lat2)
    assert torch.equal(y1[..., : 7 * hop], y2[..., : 7 * hop])
    assert not torch.allclose(y1[..., 7 * hop :], y2[..., 7 * hop :])
    # end to end: output before the frame that holds the first changed sample does not move
    o1, o2 = codec.decode(codec.encode(wav)), codec.decode(codec.encode(changed))
    assert torch.equal(o1[..., : done * hop], o2[..., : done * hop])


def test_non_causal_encoder_looks_ahead():
    codec = tiny(causal=False).eval()
    wav = torch.randn(1, 1, 12 * codec.hop_length)
    changed = wav.clone()
    changed[..., 6 * codec.hop_length :] += 1.0
    assert not torch.equal(codec.encoder(wav)[..., :5], codec.encoder(changed)[..., :5])


@pytest.mark.parametrize(
    "kind,lstm,lstm_dim", [("vq", 0, None), ("ema", 0, None), ("fsq", 0, None), ("ema", 2, None), ("ema", 2, 12)]
)
def test_gradient_reaches_the_encoder_through_the_quantizer(kind, lstm, lstm_dim):
    codec = tiny(kind=kind, lstm=lstm, lstm_dim=lstm_dim).train()
    wav = torch.randn(2, 1, 2000) * 0.1
    out = codec(wav)
    (out.wav.pow(2).mean() + out.quantizer_loss).backward()
    parts = [codec.encoder, codec.decoder] + ([codec.encoder_lstm] if lstm else [])
    assert (codec.encoder_lstm is None) == (lstm == 0)
    if lstm_dim:  # a wider LSTM maps back to the latents
        assert codec.encoder_lstm.lstm.hidden_size == lstm_dim and codec.encoder_lstm.out.weight.shape == (8, lstm_dim)
    for part in parts:
        for name, p in part.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_latent_lstm_sees_the_past_and_not_the_future():
    codec = tiny(lstm=1, causal=True).eval()
    hop = codec.hop_length
    wav = torch.randn(1, 1, 12 * hop) * 0.1
    changed = wav.clone()
    changed[..., 8 * hop :] += 0.5
    base, moved = codec.encoder(wav), codec.encoder(changed)  # the convolutions alone
    assert torch.equal(base[..., :6], moved[..., :6])
    with torch.no_grad():
        a, b = codec.encoder_lstm(base), codec.encoder_lstm(moved)
    assert torch.equal(a[..., :6], b[..., :6])  # unidirectional: the past only
    assert not torch.allclose(a[..., 10:] - base[..., 10:], torch.zeros(1))  # it adds to the latents
    with torch.no_grad():
        shifted = codec.encoder_lstm(torch.cat([base[..., :1] * 0 + 1.0, base], -1))[..., 1:]
    assert not torch.allclose(shifted, a)  # an earlier frame changes every later one


@pytest.mark.parametrize("activation,lstm,lstm_dim", [("elu", 0, None), ("snake", 0, None), ("snake", 2, 12)])
def test_save_load_gives_identical_units_and_audio(tmp_path, activation, lstm, lstm_dim):
    codec = tiny(activation=activation, lstm=lstm, lstm_dim=lstm_dim)
    codec.train()
    codec(torch.randn(2, 1, 4000) * 0.1)  # move EMA state away from init
    codec.eval()
    path = codec.save_pretrained(tmp_path / "model.pt")
    loaded = Codec.from_pretrained(path)
    wav = torch.randn(1, 1, 5000) * 0.1
    assert torch.equal(loaded.encode(wav), codec.encode(wav))
    assert torch.equal(loaded.decode(codec.encode(wav)), codec.decode(codec.encode(wav)))
    assert loaded.config == codec.config


def test_from_pretrained_rejects_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="expected a vqaudio codec file, this is not a vqaudio model file"):
        Codec.from_pretrained(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt.pt: not a loadable vqaudio codec file"):
        Codec.from_pretrained(corrupt)
    with pytest.raises(ValueError, match="codec file not found"):
        Codec.from_pretrained(tmp_path / "missing.pt")


def test_pickled_code_in_a_checkpoint_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "vqaudio-codec", "version": 1, "config": Evil(), "state_dict": {}}, path)
    with pytest.raises(ValueError, match="not a loadable"):
        Codec.from_pretrained(path)


def test_bad_waveforms_give_clear_errors():
    codec = tiny().eval()
    with pytest.raises(ValueError, match=r"mono waveform.*\(2, 2, 100\).*downmix"):
        codec.encode(torch.zeros(2, 2, 100))
    bad = torch.zeros(1, 1, 100)
    bad[0, 0, 5] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/Inf sample"):
        codec.encode(bad)
    with pytest.raises(ValueError, match="empty waveform"):
        codec.encode(torch.zeros(1, 1, 0))
    with pytest.raises(ValueError, match="int PCM"):
        codec.encode(torch.zeros(1, 1, 100, dtype=torch.int16))


def test_silence_and_clipping_encode_to_valid_units():
    codec = tiny().eval()
    for wav in (torch.zeros(1, 1, 3000), torch.ones(1, 1, 3000), torch.sign(torch.randn(1, 1, 3000))):
        idx = codec.encode(wav)
        assert idx.min() >= 0 and idx.max() < codec.codebook_size
        assert torch.isfinite(codec.decode(idx, length=3000)).all()


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['chanels'\]"):
        Codec.from_config({"chanels": 8})
    with pytest.raises(ValueError, match=r"codec config.quantizer.n_q: expected int"):
        Codec.from_config({"quantizer": {"num_quantizers": "eight"}})


def test_encoder_decoder_lengths_and_hop():
    enc, dec = Encoder(channels=4, strides=[2, 3], latent_dim=5), Decoder(channels=4, strides=[2, 3], latent_dim=5)
    assert enc.hop_length == 6
    z = enc(torch.randn(3, 1, 60))
    assert z.shape == (3, 5, 10)
    assert dec(z).shape == (3, 1, 60)
    with pytest.raises(ValueError, match="strides must be"):
        Encoder(strides=[])


def _log_mel_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    from vqaudio.features import MelSpectrogram

    mel = MelSpectrogram(16000, n_fft=1024, hop=256, n_mels=64)
    with torch.no_grad():
        return float((mel(a) - mel(b)).abs().mean())


def test_tiny_codec_overfits_one_real_utterance(tmp_path):
    from vqaudio.train.losses import MultiScaleMelLoss

    torch.manual_seed(0)
    wav, sr = sf.read(one_utterance(tmp_path), dtype="float32")
    wav = torch.from_numpy(wav[:sr].astype(np.float32))[None, None]
    codec = Codec(
        CodecConfig(
            encoder="seanet",
            channels=8,
            encoder_channels=8,
            strides=[2, 4, 5, 8],
            latent_dim=32,
            max_channels=64,
            lstm=0,
            quantizer=QuantizerConfig(kind="ema", n_q=4, codebook_size=64, dropout=False, dead_code_threshold=0.0),
        )
    )
    mel_loss = MultiScaleMelLoss(16000)
    opt = torch.optim.Adam(codec.parameters(), lr=3e-3)
    codec.eval()
    before = _log_mel_distance(codec(wav).wav, wav)
    codec.train()
    for _ in range(250):
        out = codec(wav)
        loss = mel_loss(out.wav, wav) + (out.wav - wav).abs().mean() + out.quantizer_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    codec.eval()
    after = _log_mel_distance(codec.decode(codec.encode(wav), length=wav.shape[-1]), wav)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("stride", [1, 2, 3, 5, 8])
def test_fast_transposed_conv_equals_torch(stride):
    from vqaudio.models.layers import conv_transpose_2s

    x = torch.randn(3, 6, 17, requires_grad=True)
    ref = torch.nn.ConvTranspose1d(6, 4, 2 * stride, stride=stride)
    ours = conv_transpose_2s(x, ref.weight, ref.bias, stride)
    expected = ref(x)
    assert ours.shape == expected.shape
    assert torch.allclose(ours, expected, atol=1e-5)
    g = torch.randn_like(expected)
    grads = torch.autograd.grad((ours * g).sum(), (x, ref.weight, ref.bias))
    grads_ref = torch.autograd.grad((expected * g).sum(), (x, ref.weight, ref.bias))
    for a, b in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize(
    "kernel, stride, dilation", [(7, 1, 1), (3, 1, 9), (4, 2, 1), (10, 5, 1), (16, 8, 1), (1, 1, 1)]
)
@pytest.mark.parametrize("causal", [False, True])
def test_padded_conv_equals_explicit_padding(kernel, stride, dilation, causal):
    from vqaudio.models.layers import PaddedConv1d

    conv = PaddedConv1d(5, 3, kernel, stride=stride, dilation=dilation, causal=causal, weight_norm=False)
    x = torch.randn(2, 5, 40 * stride)
    total = (kernel - 1) * dilation + 1 - stride
    pad = (total, 0) if causal else (total - total // 2, total // 2)
    expected = conv.conv(torch.nn.functional.pad(x, pad))
    assert torch.allclose(conv(x), expected, atol=1e-5)


def _randomise(module: torch.nn.Module) -> torch.nn.Module:
    """Non-zero biases and Snake alphas, so that a path that drops one cannot pass."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
    return module


@pytest.mark.parametrize("strides", [[2, 4, 5, 8], [3], [4, 4, 4], [1, 2]])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("activation", ["elu", "snake", "leaky_relu"])
def test_windowed_inference_equals_the_layers(strides, causal, activation):
    from vqaudio.models.windows import context_frames, forward_windows

    torch.manual_seed(0)
    arch = dict(strides=strides, causal=causal, activation=activation, latent_dim=8, dilations=[1, 3], max_channels=16)
    for channels, weight_norm in ((4, True), (6, False)):
        enc = _randomise(Encoder(channels=channels, weight_norm=weight_norm, **arch))
        dec = _randomise(Decoder(channels=channels, weight_norm=weight_norm, **arch))
        assert enc.fast_path and dec.fast_path
        need = max(sum(context_frames(enc.net, enc.hop_length)), sum(context_frames(dec.net, 1)))
        # one padded window; exactly one window; several windows, one of them padded past the end
        for batch, frames, sizes in ((1, 1, (16,)), (3, 7, (7,)), (2, 4 * need + 5, (need + 2, need + 1))):
            wav = torch.randn(batch, 1, frames * enc.hop_length)
            kept = wav.clone()
            with torch.no_grad():
                z = forward_windows(enc.net, wav, enc.hop_length, sizes)
                assert torch.allclose(z, enc.net(wav), atol=1e-5), (channels, batch, frames, sizes)
                z_kept = z.clone()
                out = forward_windows(dec.net, z, 1, sizes)
                assert torch.allclose(out, dec.net(z), atol=1e-5), (channels, batch, frames, sizes)
            assert torch.allclose(dec.infer(z), out, atol=1e-5) and torch.allclose(enc.infer(wav), z, atol=1e-5)
            assert torch.equal(wav, kept) and torch.equal(z, z_kept)  # inputs are never written


def test_windowed_default_codec_equals_the_layers_in_float64():
    from vqaudio.models.windows import forward_windows

    codec = (
        _randomise(Codec(CodecConfig(encoder="seanet", decoder="seanet", decoder_lstm=True))).double().eval()
    )  # SEANet's windows
    wav = torch.randn(2, 1, 41 * codec.hop_length, dtype=torch.float64) * 0.3
    with torch.no_grad():  # windows of 16 and 20 frames: 2 + 3 and 5 + 4 frames of context
        z = forward_windows(codec.encoder.net, wav, codec.hop_length, (20, 16))
        assert torch.allclose(z, codec.encoder.net(wav), rtol=0, atol=1e-10)
        assert torch.allclose(forward_windows(codec.decoder.net, z, 1, (20, 16)), codec.decoder.net(z), atol=1e-10)
        assert torch.allclose(codec.decoder.infer(z), codec.decoder.net(z), atol=1e-10)


def test_time_major_blocked_passes_equal_the_layers(monkeypatch):
    from vqaudio.models import layers

    codec = _randomise(Codec()).eval()
    wav = torch.randn(2, 1, 9 * codec.hop_length) * 0.3
    with torch.no_grad():
        z = codec.encoder.net(wav)
        y = codec.decoder.net(z)
    # ELU and the residual bias add in blocks of a few rows, the last one partial
    monkeypatch.setattr(layers, "BLOCK", 100)
    assert torch.allclose(codec.encoder.infer(wav), z, atol=1e-5)
    assert torch.allclose(codec.decoder.infer(z), y, atol=1e-6)


def test_chunk_plan_keeps_every_frame_once_with_its_context():
    from vqaudio.models.windows import CHUNK_FRAMES, WINDOW_COST, chunk_plan

    assert chunk_plan(500, 4, 5) == ((0, 500, 0, 500),)  # 10 s: one window, no context computed
    assert chunk_plan(1, 4, 5) == ((0, 16, 0, 1),)
    for frames in list(range(1, 700)) + [1001, 2500]:
        plan = chunk_plan(frames, 4, 5)
        assert plan[0][0] == 0 and plan[0][2] == 0 and plan[-1][3] == frames, (frames, plan)
        for (start, size, first, last), nxt in zip(plan, plan[1:] + ((None, None, frames, None),), strict=True):
            assert size in CHUNK_FRAMES and last == nxt[2] and first < last, (frames, plan)
            assert first == 0 == start or first - start >= 4, (frames, plan)  # context before, unless at 0
            assert start + size >= frames or start + size - last >= 5, (frames, plan)  # after, unless past the end
        # no more work than the plain plan: 500-frame windows, then the smallest window that reaches the end
        plain, kept = [], 0
        while not plain or plain[-1][0] + plain[-1][1] < frames:
            start = kept - 4 if kept else 0
            fits = [size for size in CHUNK_FRAMES if start + size >= frames]
            plain.append((start, min(fits) if fits else 500))
            kept = start + 500 - 5
        assert sum(size + WINDOW_COST for _, size, _, _ in plan) <= sum(size + WINDOW_COST for _, size in plain)
    with pytest.raises(ValueError, match="too small"):
        chunk_plan(100, 4, 5, (9, 8))


def test_window_context_is_the_receptive_field():
    from vqaudio.models.windows import context_frames

    codec = Codec(CodecConfig(encoder="seanet", decoder="seanet"))  # the SEANet decoder's windows
    before, after = context_frames(codec.encoder.net, codec.hop_length)
    # the encoder's receptive field spans both contexts: neither side alone covers it, both together do
    assert (before + after) * codec.hop_length >= codec.encoder.receptive_field
    assert max(before, after) * codec.hop_length < codec.encoder.receptive_field
    assert context_frames(codec.decoder.net, 1) == (5, 4)


def test_time_major_weights_follow_parameter_updates():
    dec = _randomise(Decoder(channels=4, strides=[2, 3], latent_dim=8, max_channels=16))
    z = torch.randn(1, 8, 5)
    before = dec.infer(z)
    opt = torch.optim.SGD(dec.parameters(), lr=0.1)
    dec(z).square().sum().backward()
    opt.step()  # in-place updates
    after = dec.infer(z)
    with torch.no_grad():
        assert not torch.allclose(before, after, atol=1e-3)
        assert torch.allclose(after, dec.net(z), atol=1e-5)
    other = _randomise(Decoder(channels=4, strides=[2, 3], latent_dim=8, max_channels=16))
    torch.nn.init.normal_(other.net[0].conv.parametrizations.weight.original1)
    dec.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert torch.allclose(dec.infer(z), other.net(z), atol=1e-5)


def test_forward_without_quantization_is_a_continuous_autoencoder():
    codec = tiny(kind="vq").train()
    stage = codec.quantizer.stages[0]
    stage.kmeans_init = True
    stage.initted.fill_(False)
    codebook = stage.codebook.detach().clone()
    wav = torch.randn(2, 1, 700) * 0.1
    out = codec(wav, quantize=False)
    assert out.indices is None and out.metrics == {}
    assert float(out.quantizer_loss) == 0.0
    expected = codec.decoder(codec.encoder(torch.nn.functional.pad(wav, (0, 3 * 320 - 700))))[..., :700]
    assert torch.allclose(out.wav, expected, atol=1e-6)
    out.wav.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.encoder.parameters())
    # the quantizer is neither run nor updated: no k-means init, no codebook change, no gradient
    assert not bool(stage.initted) and torch.equal(stage.codebook, codebook) and stage.codebook.grad is None
    codec(wav)  # the first quantized training pass initialises it
    assert bool(stage.initted)


def test_import_bounds_onednn_primitive_cache_unless_the_user_set_it():
    import os
    import subprocess
    import sys

    code = "import os, vqaudio; print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'])"
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(e: dict) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], env=e, cwd=root, capture_output=True, text=True, check=True)

    assert run(env).stdout.strip() == "512"  # room for every window shape of batch-1 encode and decode
    assert run({**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "32"}).stdout.strip() == "32"


def test_a_codec_saved_before_quantization_started_is_flagged(tmp_path, caplog):
    codec = tiny(nq=3)
    for stage in codec.quantizer.stages:  # k-means init: codebooks are random until a quantized training step
        stage.initted.fill_(False)
    fresh = codec.save_pretrained(tmp_path / "fresh.pt")
    codec.train()
    codec(torch.randn(2, 1, 8000) * 0.1)
    trained = codec.save_pretrained(tmp_path / "trained.pt")
    with caplog.at_level("WARNING", logger="vqaudio.models.codec"):
        Codec.from_pretrained(trained)
        assert not caplog.records
        Codec.from_pretrained(fresh)
    assert "level(s) 0, 1, 2 were never initialised" in caplog.text
