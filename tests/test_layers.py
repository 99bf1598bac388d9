"""One network: each layer's time-major CPU inference equals its ``forward``, on random architectures, and a
layer without a trustworthy fast path makes the model run layer by layer instead of giving a wrong result."""

from __future__ import annotations

import logging
import random

import pytest
import torch
from torch import nn

from vqaudio.models import Codec, CodecConfig, Decoder, Encoder
from vqaudio.models.layers import ELU, PaddedConv1d, ResidualUnit, Snake, has_fast_path
from vqaudio.quantize import QuantizerConfig


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Non-zero biases and Snake alphas, so that a path that drops one cannot pass."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
    return module


def random_config(rng: random.Random) -> CodecConfig:
    strides = [rng.choice([1, 2, 3, 4, 5]) for _ in range(rng.randint(1, 3))]
    return CodecConfig(
        encoder="seanet",
        channels=rng.choice([2, 3, 4, 6]),
        encoder_channels=rng.choice([None, 2, 5]),
        strides=strides,
        latent_dim=rng.choice([3, 8]),
        kernel=rng.choice([1, 3, 5, 7]),
        residual_kernel=rng.choice([1, 2, 3, 5]),
        residual_out_kernel=rng.choice([1, 3]),
        dilations=rng.sample([1, 2, 3, 9], rng.randint(1, 3)),
        activation=rng.choice(["elu", "snake", "leaky_relu"]),
        causal=rng.random() < 0.5,
        weight_norm=rng.random() < 0.7,
        max_channels=rng.choice([4, 8, 16]),
        lstm=0,
        quantizer=QuantizerConfig(kind="fsq", n_q=1, levels=[3, 3]),
        decoder="seanet",  # the SEANet stacks' time-major path
    )


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_equals_the_layers_on_random_architectures(seed):
    rng = random.Random(seed)
    cfg = random_config(rng)
    codec = _randomise(Codec(cfg), seed).eval()
    assert codec.encoder.fast_path and codec.decoder.fast_path, cfg
    hop = codec.hop_length
    for frames in (1, rng.randint(2, 40), rng.randint(500, 700)):  # one window; one padded; several
        batch = rng.randint(1, 3)
        wav = torch.randn(batch, 1, frames * hop, dtype=torch.float64)
        codec.double()
        with torch.no_grad():
            z_layers = codec.encoder(wav)
            y_layers = codec.decoder(z_layers)
        z_fast = codec.encoder.infer(wav)
        y_fast = codec.decoder.infer(z_layers)
        assert z_fast.shape == z_layers.shape and y_fast.shape == y_layers.shape
        assert torch.allclose(z_fast, z_layers, rtol=1e-9, atol=1e-9), (cfg, frames)
        assert torch.allclose(y_fast, y_layers, rtol=1e-9, atol=1e-9), (cfg, frames)
    codec.float()
    wav = torch.randn(2, 1, 37 * hop)
    with torch.no_grad():
        assert torch.allclose(codec.encoder.infer(wav), codec.encoder(wav), atol=1e-4)


def test_a_snake_folded_into_the_next_conv_computes_the_conv_of_the_snake():
    snake = _randomise(Snake(6), 3).requires_grad_(False)
    x = torch.randn(2, 50, 6) * 3
    assert torch.allclose(snake.scaled(x), snake.activate(x) * snake.alpha.reshape(-1), rtol=1e-5, atol=1e-5)
    y = x.clone()
    assert snake.scaled(y, out=y) is y and torch.equal(y, snake.scaled(x))  # in place
    assert snake.foldable() and not snake.double().foldable()  # float64 keeps the exact form
    snake.float().alpha[0, 2] = -0.05
    assert not snake.foldable()


@pytest.mark.parametrize("pointwise", [False, True])
def test_folded_snakes_match_the_layers_in_float32(pointwise):
    """The encoder's fast path folds each Snake's 1 / alpha into the conv after it; float64 layers are the truth."""
    torch.manual_seed(0)
    enc = Encoder(channels=4, latent_dim=8, max_channels=16, strides=[2, 4], dilations=[1, 3], activation="snake")
    enc = _randomise(enc, 5)
    if not pointwise:  # a residual unit's second conv of kernel 3: its Snake is folded as a plain conv's
        enc = Encoder(
            channels=4, latent_dim=8, max_channels=16, strides=[2, 4], activation="snake", residual_out_kernel=3
        )
        enc = _randomise(enc, 5)
    enc.requires_grad_(False)
    snakes = [m for m in enc.modules() if isinstance(m, Snake)]
    assert snakes and all(m.foldable() for m in snakes)
    wav = torch.randn(2, 1, 40 * 8)
    with torch.no_grad():
        truth = enc.double()(wav.double())
        fast = enc.float().infer(wav)
    assert torch.allclose(fast.double(), truth, rtol=1e-5, atol=1e-5)


def test_both_paths_accept_the_same_inputs():
    enc, dec = Encoder(channels=4, latent_dim=8, max_channels=8), Decoder(channels=4, latent_dim=8, max_channels=8)
    for bad in (torch.zeros(1, 1, 321), torch.zeros(1, 2, 320), torch.zeros(1, 320), torch.zeros(1, 1, 0)):
        for run in (enc, enc.infer):
            with pytest.raises(ValueError, match="Encoder"):
                run(bad)
    for bad in (torch.zeros(1, 7, 3), torch.zeros(1, 8, 0)):
        for run in (dec, dec.infer):
            with pytest.raises(ValueError, match="Decoder"):
                run(bad)


def test_the_switch_chooses_the_path_not_grad_mode():
    enc = _randomise(Encoder(channels=4, latent_dim=8, max_channels=8), 0)
    wav = torch.randn(1, 1, 3 * 320)
    # forward is the layers even without autograd: it keeps gradients when they are on
    out = enc(wav)
    assert out.requires_grad
    with torch.no_grad():
        assert torch.allclose(enc(wav), out.detach())
    # infer never records autograd, whatever the grad mode, and is the same function
    assert not enc.infer(wav).requires_grad
    assert enc.use_fast_path(False) is False and not enc.fast_path
    assert torch.allclose(enc.infer(wav), out.detach(), atol=1e-5)
    assert enc.use_fast_path(True) is True


class _Doubled(ELU):
    """An activation that changes forward but inherits the fast path: the fast path must be refused."""

    def forward(self, x):
        return 2 * super().forward(x)


class _Norm(nn.Module):
    """A new layer type with no fast path at all."""

    def forward(self, x):
        return x / (x.std(dim=-1, keepdim=True) + 1)


@pytest.mark.parametrize("replacement", [_Doubled, _Norm])
def test_a_layer_without_a_trustworthy_fast_path_runs_layer_by_layer(replacement, caplog):
    torch.manual_seed(0)
    dec = _randomise(Decoder(channels=4, strides=[2, 3], latent_dim=8, max_channels=16), 1)
    position = next(i for i, m in enumerate(dec.net) if isinstance(m, ELU))
    dec.net[position] = replacement()
    assert not has_fast_path(dec.net[position])
    with caplog.at_level(logging.INFO, logger="vqaudio"):
        assert dec.use_fast_path(True) is False
    assert any("layer by layer" in r.getMessage() and str(position) in r.getMessage() for r in caplog.records)
    z = torch.randn(2, 8, 9)
    with torch.no_grad():
        assert torch.allclose(dec.infer(z), dec.net(z))


def test_a_residual_unit_with_a_foreign_part_has_no_fast_path():
    unit = ResidualUnit(4, 1, 3, "snake", causal=False, weight_norm=True)
    assert has_fast_path(unit)
    unit.block[2] = _Norm()
    assert not has_fast_path(unit)
    assert has_fast_path(Snake(3)) and has_fast_path(PaddedConv1d(2, 3, 3))
    assert not has_fast_path(nn.ELU()) and not has_fast_path(nn.Conv1d(2, 3, 3))


def test_encoder_built_at_construction_checks_its_layers():
    # a model built from our layers always gets the fast path
    for act in ("elu", "snake", "leaky_relu"):
        assert Encoder(channels=2, latent_dim=4, activation=act, max_channels=4).fast_path


def test_snake_backward_equals_autograd_of_its_equation():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 40, dtype=torch.float64, requires_grad=True)
    snake = Snake(5).double()
    with torch.no_grad():
        snake.alpha.copy_(torch.rand(1, 5, 1) * 2 + 0.1)
    alpha = snake.alpha.detach().clone().requires_grad_()
    grad = torch.randn(3, 5, 40, dtype=torch.float64)
    got = torch.autograd.grad(snake(x), (x, snake.alpha), grad)
    want = torch.autograd.grad(x + (alpha * x).sin().pow(2) / (alpha + 1e-9), (x, alpha), grad)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-7)
    assert torch.autograd.gradcheck(lambda t: snake(t), (x[:1, :, :6].detach().requires_grad_(),))
