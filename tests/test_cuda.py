"""CUDA checks, run by benchmarks/gpu.sh on a GPU machine (skipped where no CUDA device is visible):
quantizers and the codec forward/backward in float32 and under bf16 autocast, EMA updates, and CPU parity."""

from __future__ import annotations

import copy

import pytest
import torch

from vqaudio.models import Codec, CodecConfig
from vqaudio.quantize import QuantizerConfig, build_quantizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu.sh)")
KINDS = ["vq", "ema", "fsq"]


def quantizer(kind: str, n_q: int = 4):
    torch.manual_seed(0)
    cfg = QuantizerConfig(kind=kind, n_q=n_q, codebook_size=256, kmeans_init=False, dead_code_threshold=0.0)
    return build_quantizer(cfg, 64)


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
@pytest.mark.parametrize("kind", KINDS)
def test_quantizer_forward_backward_on_cuda(kind, bf16):
    q = quantizer(kind).cuda().train()
    x = torch.randn(4, 64, 100, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = q(x)
        loss = out.quantized.float().square().mean() + out.loss
    loss.backward()
    assert torch.isfinite(loss) and x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert out.indices.dtype == torch.long and out.indices.shape == (4, 4, 100)
    q.eval()
    with torch.no_grad():
        ev = q(x.detach())
        assert torch.allclose(q.decode(ev.indices), ev.quantized.float(), atol=1e-5)  # decode(indices) = quantized


@pytest.mark.parametrize("kind", KINDS)
def test_cuda_codes_equal_cpu_codes(kind):
    q = quantizer(kind).eval()
    x = torch.randn(2, 64, 300)
    with torch.no_grad():
        cpu, gpu = q.encode(x), copy.deepcopy(q).cuda().encode(x.cuda()).cpu()
    assert (cpu == gpu).float().mean() > 0.999  # ties may break differently in the last bit


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_ema_update_on_cuda_matches_cpu(bf16):
    q = quantizer("ema", n_q=1).train()
    g = copy.deepcopy(q).cuda()
    x = torch.randn(8, 64, 200)
    before = q.codebook.clone()
    with torch.no_grad():
        q(x)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            g(x.cuda())
    assert not torch.equal(q.codebook, before)
    tol = 2e-2 if bf16 else 1e-5
    assert torch.allclose(g.codebook.cpu(), q.codebook, atol=tol, rtol=tol)


@pytest.mark.parametrize("lstm", [0, 2], ids=["conv", "latent-lstm"])
@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16-autocast"])
def test_codec_forward_backward_on_cuda(bf16, lstm):
    torch.manual_seed(0)
    q = QuantizerConfig(kind="ema", n_q=4, codebook_size=256, kmeans_init=False)
    codec = Codec(CodecConfig(encoder="seanet", quantizer=q, lstm=lstm)).cuda().train()
    wav = torch.randn(2, 1, 16000, device="cuda") * 0.1
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        out = codec(wav)
        loss = (out.wav.float() - wav).abs().mean() + out.quantizer_loss
    loss.backward()
    assert out.wav.shape == wav.shape and torch.isfinite(loss)
    parts = [("encoder", codec.encoder), ("decoder", codec.decoder)]
    parts += [("encoder_lstm", codec.encoder_lstm), ("decoder_lstm", codec.decoder_lstm)] if lstm else []
    for name, module in parts:
        grads = [p.grad for p in module.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


def test_codec_encode_decode_on_cuda_equals_cpu():
    torch.manual_seed(0)
    codec = Codec(CodecConfig(encoder="seanet", quantizer=QuantizerConfig(kind="ema", n_q=4, kmeans_init=False))).eval()
    wav = torch.randn(1, 1, 32000) * 0.1
    codes = codec.encode(wav)
    gpu = copy.deepcopy(codec).cuda()
    assert (gpu.encode(wav.cuda()).cpu() == codes).float().mean() > 0.99
    assert torch.allclose(gpu.decode(codes.cuda()).cpu(), codec.decode(codes), atol=1e-4)


def test_batched_extraction_on_cuda_equals_the_cpu_units():
    """encode_batch on CUDA (padded batches of convolutions with their tails, the LSTM over the batch) against
    each waveform alone on the CPU, for a codec with non-zero biases (padding would show)."""
    torch.manual_seed(0)
    q = QuantizerConfig(kind="vq", n_q=2, codebook_size=64, kmeans_init=False, dead_code_threshold=0.0)
    cfg = CodecConfig(
        encoder="seanet", channels=8, encoder_channels=8, latent_dim=16, max_channels=32, lstm=2, quantizer=q
    )
    codec = Codec(cfg).eval()
    with torch.no_grad():
        for name, param in codec.encoder.named_parameters():
            if name.endswith("bias"):
                param.uniform_(-0.5, 0.5)
    wavs = [torch.randn(n) * 0.1 for n in (16000, 23000, 800, 16320, 47000)]
    cpu = [codec.encode(w[None, None])[0] for w in wavs]
    gpu = copy.deepcopy(codec).cuda().encode_batch([w.cuda() for w in wavs])
    same = sum(int((a == b.cpu()).all(0).sum()) for a, b in zip(cpu, gpu, strict=True))
    assert [b.shape for b in gpu] == [a.shape for a in cpu]
    assert same / sum(a.shape[-1] for a in cpu) > 0.999


def test_ssl_padded_batches_on_cuda_equal_single_runs(tmp_path):
    transformers = pytest.importorskip("transformers")
    import numpy as np

    from vqaudio.units.ssl import SSLFeatures

    from .test_ssl import SMALL

    transformers.HubertModel(transformers.HubertConfig(**SMALL)).save_pretrained(tmp_path / "hubert")
    feats = SSLFeatures(str(tmp_path / "hubert"), 2, device="cuda")
    rng = np.random.default_rng(0)
    wavs = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 15200, 14800, 16100)]
    batch = feats.features_batch(wavs)  # CUDA: neighbours by length, at most 10 % padding, in one batch
    for wav, f in zip(wavs, batch, strict=True):
        alone = feats.features(wav)
        assert f.shape == alone.shape and torch.allclose(f, alone, atol=2e-2 * float(alone.abs().max()))
