"""Per-level diagnostics: relative latent error after each residual level (hand-built and fitted stacks), the
per-level scalars of codec training, and ``vqaudio evaluate --model --data --n-q`` end to end."""

from __future__ import annotations

import json
import pathlib

import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.cli.main import main
from vqaudio.config import from_dict
from vqaudio.models import Codec, CodecConfig
from vqaudio.quantize import ResidualQuantizer, VectorQuantizer
from vqaudio.quantize.residual import latent_errors

from .speech import SR, synth_utterance
from .test_train_codec import TINY, _scalars, data_dirs, tiny_config, train_args


def fixed_stage(codes: list[list[float]]) -> VectorQuantizer:
    stage = VectorQuantizer(len(codes[0]), len(codes))
    with torch.no_grad():
        stage.codebook.copy_(torch.tensor(codes))
    return stage.eval()


def test_latent_error_of_a_hand_built_stack():
    # z = (3, 4) in every frame, |z| = 5; stage 0 holds (3, 0), leaving (0, 4): error 4/5 = 1 - 1/5;
    # stage 1 holds that residual exactly: error 0. The decoys are farther from every residual.
    stack = ResidualQuantizer(
        [fixed_stage([[3.0, 0.0], [-10.0, -10.0]]), fixed_stage([[50.0, 50.0], [0.0, 4.0]])]
    ).eval()
    z = torch.tensor([3.0, 4.0])[None, :, None].repeat(2, 1, 7)
    errors = latent_errors(stack, z)
    assert errors.shape == (2, 2)
    assert torch.allclose(errors, torch.tensor([[1 - 1 / 5, 0.0]] * 2))
    metrics = stack(z).metrics  # the batch figures of the training pass agree
    assert float(metrics["latent_error_q1"]) == pytest.approx(0.8)
    assert float(metrics["latent_error_q2"]) == pytest.approx(0.0, abs=1e-7)
    # a single quantizer is one level; all-zero latents have no relative error
    assert torch.allclose(latent_errors(stack.stages[0], z), torch.tensor([[0.8], [0.8]]))
    assert torch.isnan(latent_errors(stack, torch.zeros(1, 2, 3))).all()


def test_latent_error_falls_with_every_fitted_level():
    torch.manual_seed(0)
    stack = ResidualQuantizer.alike(4, lambda: VectorQuantizer(8, 16, kmeans_init=True))
    z = torch.randn(4, 8, 128)
    stack.train()(z)  # each stage runs k-means on the residual the previous stages leave
    stack.eval()
    errors = latent_errors(stack, z)
    assert (errors[:, 1:] < errors[:, :-1]).all(), errors
    assert 0 < float(errors[:, -1].max()) < float(errors[:, 0].min()) < 1
    # the forward's batch figure is the per-example errors pooled by the examples' norms
    norms = z.flatten(1).norm(dim=1)
    pooled = ((errors * norms[:, None]) ** 2).sum(0).sqrt() / norms.pow(2).sum().sqrt()
    metrics = stack(z).metrics
    assert torch.allclose(torch.stack([metrics[f"latent_error_q{q}"] for q in range(1, 5)]), pooled, atol=1e-5)


def fitted_tiny_codec(tmp_path: pathlib.Path, data: pathlib.Path) -> pathlib.Path:
    """The tiny recipe codec (16 codes per level, so k-means has more frames than codes), its residual
    stages k-means-initialised on the data's latents."""
    cfg = yaml.safe_load(TINY.read_text())["model"]
    cfg["quantizer"]["codebook_size"] = 16
    codec = Codec(from_dict(CodecConfig, cfg, where="test"))
    wavs = [torch.from_numpy(sf.read(line.split()[1], dtype="float32")[0]) for line in open(data / "wav.scp")]
    with torch.no_grad():
        z = torch.cat([codec.level0(w[None, None], quantize=False) for w in wavs], dim=-1)
        codec.quantizer.train()(z)
    return codec.eval().save_pretrained(tmp_path / "model.pt")


def make_data(tmp_path: pathlib.Path) -> pathlib.Path:
    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for i, seconds in enumerate((1.0, 1.3, 0.8)):
        path = tmp_path / f"u{i}.flac"
        sf.write(path, synth_utterance(seconds, seed=i), SR)
        lines.append(f"spk-u{i} {path}\n")
    (data / "wav.scp").write_text("".join(lines))
    return data


def test_evaluate_a_codec_at_each_depth(tmp_path, capsys):
    data = make_data(tmp_path)
    model = fitted_tiny_codec(tmp_path, data)
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--n-q", "2,1", "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["num_utterances"] == 3 and summary["n_q"] == 2
    assert list(summary["by_n_q"]) == ["1", "2"]
    for q, entry in summary["by_n_q"].items():
        assert entry["bitrate_bps"] == pytest.approx(50 * 4 * int(q))  # 50 frames/s, 16 codes = 4 bits
        assert set(entry) >= {"log_mel_distance", "stft_distance", "si_sdr", "stoi", "pesq_wb"}
        assert isinstance(entry["log_mel_distance"], float) and isinstance(entry["si_sdr"], float)
    error = summary["latent_error"]
    assert len(error) == 2 and 0 < error[1] < error[0] < 1
    assert len(summary["usage_by_level"]) == len(summary["perplexity_by_level"]) == 2
    assert all(0 < u <= 1 for u in summary["usage_by_level"])
    assert all(1 < p <= 16 for p in summary["perplexity_by_level"])
    # depth 2 decodes both levels: the two depths' resyntheses differ
    rows = (out / "per_utterance.csv").read_text().splitlines()
    assert rows[0].startswith("utt,n_q,seconds,") and len(rows) == 1 + 3 * 3
    by_depth = {line.split(",")[1]: line.split(",")[3] for line in rows[1:] if line.startswith("spk-u0,")}
    assert len({by_depth["1"], by_depth["2"], by_depth["unquantized"]}) == 3
    # the ceiling is the decoder on the encoder's own latents: its log-mel distance is the mean of those rows
    ceiling = [float(line.split(",")[3]) for line in rows[1:] if line.split(",")[1] == "unquantized"]
    assert summary["unquantized"]["log_mel_distance"] == pytest.approx(sum(ceiling) / 3)
    assert "bitrate_bps" not in summary["unquantized"]
    assert len((out / "latent_error.csv").read_text().splitlines()) == 4
    results = (out / "RESULTS.md").read_text()
    assert "| 1 | 200 |" in results and "| 2 | 400 |" in results and "(quality_by_n_q.png)" in results
    assert "| unquantized | |" in results
    assert results in capsys.readouterr().out
    assert (out / "quality_by_n_q.png").stat().st_size > 0 and len(list(out.glob("spectrogram_*.png"))) == 3
    assert "evaluated 3 utterances" in (out / "evaluate.log").read_text()
    # without --n-q: 1, 2, 4, ... up to the codec's depth
    again = tmp_path / "again"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(again)]) == 0
    assert list(json.loads((again / "metrics.json").read_text())["by_n_q"]) == ["1", "2"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n-q", "1,3"], "--n-q values must lie in [1, 2]"),
        (["--n-q", "0"], "--n-q values must lie in [1, 2]"),
        (["--n-q", "1,two"], "--n-q takes a comma list"),
        (["--ref", "REF"], "not both"),
        (["--units", "UNITS"], "--units goes with --ref and --hyp"),
    ],
)
def test_bad_depths_and_mixed_forms_are_one_line(tmp_path, capsys, extra, message):
    data = make_data(tmp_path)
    cfg = yaml.safe_load(TINY.read_text())["model"]
    model = Codec(from_dict(CodecConfig, cfg, where="test")).save_pretrained(tmp_path / "model.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_the_two_forms_need_their_pairs(tmp_path, capsys):
    for args, message in (
        (["--ref", "R"], "needs --ref and --hyp"),
        (["--model", "M"], "--model and --data go together"),
        (["--ref", "R", "--hyp", "H", "--n-q", "2"], "--n-q goes with --model and --data"),
    ):
        assert main(["evaluate", "--out", str(tmp_path / "o"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_training_logs_per_level_scalars(tmp_path):
    train, valid = data_dirs(tmp_path)
    conf = tiny_config(tmp_path, max_steps=2, val_every=2, checkpoint_every=2, log_every=1, num_audio_examples=0)
    cfg = yaml.safe_load(conf.read_text())
    cfg["loss"]["quantizer_start"] = 0  # the quantizer on from the first step
    conf.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    assert main(train_args(conf, train, valid, exp)) == 0
    for prefix in ("train", "val"):
        for tag in ("usage_l0", "usage_l1", "perplexity_l0", "perplexity_l1", "latent_error_q1", "latent_error_q2"):
            assert _scalars(exp, f"{prefix}/{tag}"), f"{prefix}/{tag}"
    (_, q1), (_, q2) = _scalars(exp, "val/latent_error_q1")[-1], _scalars(exp, "val/latent_error_q2")[-1]
    assert 0 < q1 and 0 < q2
    assert all(0 < v <= 1 for _, v in _scalars(exp, "train/usage_l1"))
