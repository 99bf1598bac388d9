"""``vqaudio train-ssl``: HuBERT masked prediction from scratch, exported as a transformers model folder."""

from __future__ import annotations

import copy

import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.cli.main import main
from vqaudio.config import to_dict
from vqaudio.train.config import TrainSSLConfig
from vqaudio.train.ssl_task import IGNORE, SSLTask, span_mask
from vqaudio.units import read_levels
from vqaudio.units.ssl import SSLFeatures

from .speech import SR, synth_utterance

pytest.importorskip("transformers")

TINY = {
    "model": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": 16,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "final_dim": 16,
    },
    "data": {"segment_seconds": 1.0, "batch_size": 2, "valid_max_seconds": 1.0},
    "optim": {"warmup_steps": 2},
    "trainer": {"max_steps": 4, "val_every": 2, "checkpoint_every": 2, "log_every": 1, "accelerator": "cpu"},
}


def test_span_mask_spans_and_rates():
    g = torch.Generator().manual_seed(0)
    mask = span_mask(4, 100, 0.5, 10, g)
    assert mask.shape == (4, 100) and mask.dtype == torch.bool
    for row in mask:  # 5 spans of 10 at distinct starts: between one span and all five, in runs of >= 10
        assert 10 <= int(row.sum()) <= 50
        edges = torch.diff(torch.cat([torch.tensor([0]), row.int(), torch.tensor([0])]))
        runs = (edges == -1).nonzero()[:, 0] - (edges == 1).nonzero()[:, 0]
        assert runs.min() >= 10
    assert not span_mask(2, 50, 0.0, 10).any()
    assert span_mask(1, 4, 0.8, 10).all()  # a span longer than the input masks all of it
    assert torch.equal(
        span_mask(3, 80, 0.8, 10, torch.Generator().manual_seed(1)),
        span_mask(3, 80, 0.8, 10, torch.Generator().manual_seed(1)),
    )


def _task(**model) -> SSLTask:
    cfg = copy.deepcopy(TINY)
    cfg["model"].update(dropout=0.0, layerdrop=0.0, **model)
    torch.manual_seed(0)
    return SSLTask(to_dict(_config(cfg)), num_units=5)


def _config(raw: dict) -> TrainSSLConfig:
    from vqaudio.config import from_dict

    return from_dict(TrainSSLConfig, raw)


def _batch():
    torch.manual_seed(3)
    wav = torch.from_numpy(synth_utterance(0.64, seed=4))[None, None].repeat(2, 1, 1)
    targets = torch.randint(0, 5, (2, 32))
    targets[1, 20:] = IGNORE
    return {"wav": wav, "targets": targets}


def test_masked_prediction_learns_and_the_feature_gradient_is_scaled():
    task, batch = _task(), _batch()
    opt = torch.optim.Adam(task.parameters(), 3e-3)
    losses = []
    for _ in range(25):
        loss, _ = task._step(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    grads = {}
    for mult in (1.0, 0.1):
        task = _task(feature_grad_mult=mult)
        loss, _ = task._step(_batch(), torch.Generator().manual_seed(0))
        loss.backward()
        grads[mult] = task.hubert.feature_extractor.conv_layers[0].conv.weight.grad.clone()
        other = task.hubert.encoder.layers[0].attention.q_proj.weight.grad
        assert other.abs().sum() > 0
    torch.testing.assert_close(grads[0.1], 0.1 * grads[1.0], rtol=1e-4, atol=1e-9)


def test_train_ssl_exports_a_transformers_folder_for_both_iterations(tmp_path):
    for name in ("train", "dev"):
        (tmp_path / name).mkdir()
    for n in range(5):
        sf.write(tmp_path / f"u{n}.wav", synth_utterance(1.1 + 0.2 * n, seed=n), SR)
    (tmp_path / "train" / "wav.scp").write_text("".join(f"u-{n} {tmp_path / f'u{n}.wav'}\n" for n in range(4)))
    (tmp_path / "dev" / "wav.scp").write_text(f"u-4 {tmp_path / 'u4.wav'}\n")
    conf = tmp_path / "ssl.yaml"
    conf.write_text(yaml.safe_dump(TINY))
    km = tmp_path / "km.pt"
    assert main(["train-kmeans", "--k", "6", "--data", str(tmp_path / "train"), "--out", str(km), "--iters", "2"]) == 0
    data = ["--train-data", str(tmp_path / "train"), "--valid-data", str(tmp_path / "dev")]
    exp = tmp_path / "it1"
    assert main(["train-ssl", "--config", str(conf), "--targets", str(km), *data, "--exp-dir", str(exp)]) == 0
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "ssl_targets.json"):
        assert (exp / name).is_file()
    # the folder is the best checkpoint's HuBERT
    ckpt = torch.load(exp / "checkpoints" / "best.ckpt", weights_only=True)
    feats = SSLFeatures(str(exp), 2)
    for name, value in feats.net.state_dict().items():
        torch.testing.assert_close(value, ckpt["state_dict"][f"hubert.{name}"])
    # iteration 2: k-means over a layer of iteration 1, then masked prediction of those units
    km2 = tmp_path / "km2"
    args = ["train-kmeans", "--feature", "ssl", "--ssl-model", str(exp), "--layer", "1", "--k", "4"]
    assert main([*args, "--data", str(tmp_path / "train"), "--out", str(km2), "--iters", "2"]) == 0
    assert (
        main(["extract-units", "--model", str(km2), "--data", str(tmp_path / "dev"), "--out", str(tmp_path / "u")]) == 0
    )
    assert len(read_levels(tmp_path / "u")["u-4"][0]) == -(-int(1.9 * SR) // 320)
    exp2 = tmp_path / "it2"
    assert main(["train-ssl", "--config", str(conf), "--targets", str(km2), *data, "--exp-dir", str(exp2)]) == 0
    # a resumed run must predict the same units; an existing run needs --resume
    assert main(["train-ssl", "--targets", str(km), *data, "--exp-dir", str(exp2), "--resume"]) == 2
    assert main(["train-ssl", "--config", str(conf), "--targets", str(km2), *data, "--exp-dir", str(exp2)]) == 2
    assert (
        main(["train-ssl", "--targets", str(km2), *data, "--exp-dir", str(exp2), "--resume", "--max-steps", "6"]) == 0
    )
    assert torch.load(exp2 / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    # a unit model at another hop cannot be the targets
    bad = tmp_path / "km25.pt"
    assert (
        main(["train-kmeans", "--k", "4", "--frame-rate", "25", "--data", str(tmp_path / "train"), "--out", str(bad)])
        == 0
    )
    assert (
        main(["train-ssl", "--config", str(conf), "--targets", str(bad), *data, "--exp-dir", str(tmp_path / "x")]) == 2
    )
