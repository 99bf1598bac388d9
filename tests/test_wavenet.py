"""The WaveNet prior: causality, incremental = full, reproducible sampling, learning a known Markov chain."""

from __future__ import annotations

import math
import pathlib

import pytest
import torch

from vqaudio.models import WaveNetPrior


def small(**kw) -> WaveNetPrior:
    torch.manual_seed(0)
    args = dict(codebook_size=16, residual_channels=16, skip_channels=24, layers=6, dilation_cycle=3)
    args.update(kw)
    return WaveNetPrior(**args).eval()


@pytest.mark.parametrize("levels", [1, 3])
def test_shapes_and_receptive_field(levels):
    prior = small(n_q=levels)
    tokens = torch.randint(0, 16, (2, levels, 20))
    logits = prior(tokens)
    assert logits.shape == (2, levels, 16, 20)  # one code shape: (B, Q, T) in, (B, Q, K, T) out, Q = 1 too
    assert prior.generate(2, 5, seed=0).shape == (2, levels, 5)
    assert prior.receptive_field == (1 + 2 + 4) * 2 + 1


@pytest.mark.parametrize("levels", [1, 2])
def test_logits_at_t_ignore_tokens_at_and_after_t(levels):
    prior = small(n_q=levels)
    tokens = torch.randint(0, 16, (1, levels, 30))
    base = prior(tokens)
    for t in (0, 7, 29):
        changed = tokens.clone()
        changed[..., t:] = torch.randint(0, 16, changed[..., t:].shape)
        out = prior(changed)
        assert torch.equal(out[..., :t], base[..., :t]) if t else True
        assert torch.allclose(out[..., : t + 1], base[..., : t + 1])  # t itself sees only frames < t


@pytest.mark.parametrize("levels, speakers", [(1, 0), (2, 0), (1, 3)])
def test_incremental_logits_equal_full_forward(levels, speakers):
    prior = small(n_q=levels, num_speakers=speakers)
    tokens = torch.randint(0, 16, (3, levels, 40))
    spk = torch.tensor([0, 2, 1]) if speakers else None
    full = prior(tokens, spk)
    assert full.shape == (3, levels, 16, 40)  # 3-D tokens give (B, Q, K, T) for any Q
    state = prior.init_state(3)
    x = prior.start[None].expand(3, -1)
    with torch.no_grad():
        weights = prior.prepare_steps(spk)
        for t in range(40):
            step = prior.step(x, state, t, weights)
            assert torch.allclose(step, full[..., t], atol=1e-5), t
            x = prior._embed(tokens[:, :, t : t + 1])[:, :, 0]


def test_sampling_is_reproducible_and_respects_top_k_and_prompt():
    prior = small(n_q=2)
    a = prior.generate(2, 25, seed=7)
    b = prior.generate(2, 25, seed=7)
    assert torch.equal(a, b) and a.shape == (2, 2, 25)
    assert not torch.equal(a, prior.generate(2, 25, seed=8))
    prompt = torch.randint(0, 16, (2, 2, 5))
    c = prior.generate(2, 10, seed=1, prompt=prompt)
    assert c.shape == (2, 2, 15) and torch.equal(c[..., :5], prompt)
    greedy = prior.generate(1, 20, top_k=1, seed=3)
    assert torch.equal(greedy, prior.generate(1, 20, top_k=1, seed=4))  # top-1 is deterministic
    nucleus = prior.generate(1, 20, top_p=1e-6, seed=5)
    assert torch.equal(nucleus, greedy[:1])


def test_bad_input_and_arguments():
    prior = small(n_q=2)
    with pytest.raises(ValueError, match=r"expected tokens of shape \(B, 2, T\)"):
        prior(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 15\]"):
        prior(torch.full((1, 2, 5), 16))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        prior.generate(1, 3, temperature=0)
    with pytest.raises(ValueError, match="speakers"):
        prior(torch.zeros(1, 2, 5, dtype=torch.long), torch.zeros(1, dtype=torch.long))


def test_save_load_round_trip(tmp_path):
    prior = small(n_q=2, num_speakers=2)
    prior.save_pretrained(tmp_path / "prior.pt")
    loaded = WaveNetPrior.from_pretrained(tmp_path / "prior.pt")
    tokens = torch.randint(0, 16, (1, 2, 12))
    spk = torch.tensor([1])
    assert torch.equal(loaded(tokens, spk), prior(tokens, spk))
    assert torch.equal(loaded.generate(1, 8, seed=2, speakers=spk), prior.generate(1, 8, seed=2, speakers=spk))


def test_prior_learns_a_markov_chain_to_within_a_tenth_of_a_bit():
    torch.manual_seed(0)
    k = 8
    transition = torch.distributions.Dirichlet(torch.full((k,), 0.3)).sample((k,))
    stationary = torch.full((k,), 1.0 / k)
    for _ in range(200):
        stationary = stationary @ transition
    entropy_rate = float(-(stationary[:, None] * transition * transition.clamp_min(1e-12).log2()).sum())

    def sample(n, length, seed):
        g = torch.Generator().manual_seed(seed)
        seq = torch.empty(n, length, dtype=torch.long)
        seq[:, 0] = torch.multinomial(stationary.expand(n, -1), 1, generator=g)[:, 0]
        for t in range(1, length):
            seq[:, t] = torch.multinomial(transition[seq[:, t - 1]], 1, generator=g)[:, 0]
        return seq

    prior = WaveNetPrior(codebook_size=k, residual_channels=32, skip_channels=32, layers=3, dilation_cycle=3).train()
    opt = torch.optim.Adam(prior.parameters(), lr=3e-3)
    train = sample(256, 64, seed=1)
    for _ in range(300):
        batch = train[torch.randint(0, 256, (32,))]
        loss = torch.nn.functional.cross_entropy(prior(batch[:, None])[:, 0, :, 1:], batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    prior.eval()
    test = sample(128, 64, seed=2)
    with torch.no_grad():
        logits = prior(test[:, None])[:, 0]
        nll_bits = float(torch.nn.functional.cross_entropy(logits[:, :, 1:], test[:, 1:])) / math.log(2)
    assert abs(nll_bits - entropy_rate) < 0.1, (nll_bits, entropy_rate)


def test_train_prior_and_sample_cli(tmp_path):
    """train-prior on units of a known Markov chain, then sample speech through a codec."""
    import json

    from vqaudio.cli.main import main
    from vqaudio.models import Codec, CodecConfig
    from vqaudio.quantize import QuantizerConfig
    from vqaudio.units import UnitsInfo, read_units, write_info, write_units

    torch.manual_seed(0)
    k = 16
    transition = torch.distributions.Dirichlet(torch.full((k,), 0.2)).sample((k,))
    for split, n in (("train", 40), ("valid", 4)):
        d = tmp_path / split
        seqs = {}
        for i in range(n):
            s = [int(torch.randint(0, k, ()))]
            for _ in range(119):
                s.append(int(torch.multinomial(transition[s[-1]], 1)))
            seqs[f"s{i % 4 if split == 'train' else 9}-u{i:03d}"] = s  # speakers s0..s3; s9 unseen
        write_units(d / "units", seqs)
        write_info(d, UnitsInfo("synthetic", 16000, 50.0, k, 1, False, n, 0))
    conf = tmp_path / "prior.yaml"
    conf.write_text(
        (pathlib.Path(__file__).resolve().parents[1] / "recipes/librispeech/conf/prior_tiny.yaml")
        .read_text()
        .replace("max_steps: 200", "max_steps: 30")
        .replace("val_every: 100", "val_every: 15")
    )
    exp = tmp_path / "exp"
    assert (
        main(
            [
                "train-prior",
                "--config",
                str(conf),
                "--train-units",
                str(tmp_path / "train"),
                "--valid-units",
                str(tmp_path / "valid"),
                "--exp-dir",
                str(exp),
            ]
        )
        == 0
    )
    assert (exp / "prior.pt").is_file() and (exp / "checkpoints" / "best.ckpt").is_file()
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 30
    codec = Codec(
        CodecConfig(
            encoder="seanet",
            channels=4,
            encoder_channels=4,
            latent_dim=8,
            max_channels=16,
            lstm=0,
            quantizer=QuantizerConfig(kind="vq", n_q=1, codebook_size=k),
        )
    )
    codec.save_pretrained(tmp_path / "codec.pt")
    out = tmp_path / "samples"
    assert (
        main(
            [
                "sample",
                "--prior",
                str(exp),
                "--codec",
                str(tmp_path / "codec.pt"),
                "--num",
                "3",
                "--seconds",
                "0.5",
                "--out",
                str(out),
                "--seed",
                "1",
                "--any-model",  # the units are a synthetic Markov chain, not this codec's
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num"] == 3 and 0 <= summary["repetition_rate"] <= 1 and summary["unit_entropy_bits"] > 0
    units = read_units(out / "units")
    assert len(units) == 3 and all(len(v) == 25 for v in units.values())
    import soundfile as sf

    assert len(sf.read(out / "sample_0000.wav")[0]) == 25 * codec.hop_length

    # a speaker-conditioned prior, sampled for one speaker with nucleus sampling, continuing a prompt
    exp2 = tmp_path / "exp_spk"
    args = ["train-prior", "--config", str(conf), "--train-units", str(tmp_path / "train")]
    assert main([*args, "--valid-units", str(tmp_path / "valid"), "--exp-dir", str(exp2), "--speakers"]) == 0
    prior = WaveNetPrior.from_pretrained(exp2 / "prior.pt")
    assert prior.config.speakers == ["<unseen>", "s0", "s1", "s2", "s3"] and prior.speaker is not None
    out2 = tmp_path / "continued"
    sample = ["sample", "--prior", str(exp2), "--codec", str(tmp_path / "codec.pt"), "--num", "2", "--out", str(out2)]
    sample.append("--any-model")  # synthetic units, not this codec's
    prompt = ["--prompt", str(tmp_path / "valid"), "--prompt-utt", "s9-u001", "--prompt-seconds", "0.2"]
    assert main([*sample, "--seconds", "0.3", "--speaker", "s2", "--top-p", "0.9", *prompt]) == 0
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["speaker"] == "s2" and summary["top_p"] == 0.9 and summary["prompt_frames"] == 10
    first = read_units(tmp_path / "valid" / "units")["s9-u001"][:10]
    assert all(v[:10] == first and len(v) == 25 for v in read_units(out2 / "units").values())
    assert main([*sample, "--speaker", "nobody"]) == 2  # one line naming the known speakers
    assert main([*sample, "--top-p", "1.5"]) == 2
    assert main([*sample, "--num", "0"]) == 2 and main([*sample, "--seconds", "nan"]) == 2


def test_repetition_stats():
    from vqaudio.models.sampling import repetition_stats

    assert repetition_stats([1, 1, 1, 2, 2, 3]) == {"repetition_rate": 0.6, "longest_run": 3.0}
