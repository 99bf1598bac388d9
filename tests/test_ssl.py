"""SSL features (HuBERT, WavLM, wav2vec 2.0 through transformers) and k-means units over them, on tiny random
models with the real 320-sample conv stack saved to folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.units import read_levels
from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel, train_kmeans
from vqaudio.units.ssl import SSLFeatures, receptive_field, zero_mean_unit_var

from .speech import SR, synth_utterance

transformers = pytest.importorskip("transformers")

SMALL = dict(
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def _save(cls, config_cls, path, **extra):
    torch.manual_seed(0)
    model = cls(config_cls(**SMALL, **extra)).eval()
    model.save_pretrained(path)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Folders of tiny random models: HuBERT with group norm (as hubert-base), WavLM and wav2vec 2.0 with layer
    norm (as the large models); the wav2vec 2.0 one has a preprocessor_config.json saying do_normalize false."""
    root = tmp_path_factory.mktemp("ssl")
    out = {
        "hubert": (root / "hubert", _save(transformers.HubertModel, transformers.HubertConfig, root / "hubert")),
        "wavlm": (
            root / "wavlm",
            _save(
                transformers.WavLMModel,
                transformers.WavLMConfig,
                root / "wavlm",
                feat_extract_norm="layer",
                do_stable_layer_norm=True,
            ),
        ),
        "wav2vec2": (
            root / "wav2vec2",
            _save(
                transformers.Wav2Vec2Model,
                transformers.Wav2Vec2Config,
                root / "wav2vec2",
                feat_extract_norm="layer",
                do_stable_layer_norm=True,
            ),
        ),
    }
    transformers.Wav2Vec2FeatureExtractor(do_normalize=False, sampling_rate=16000).save_pretrained(root / "wav2vec2")
    return out


def _wav(seconds: float, seed: int = 0) -> np.ndarray:
    return synth_utterance(seconds, seed=seed)


@pytest.mark.parametrize("name", ["hubert", "wavlm", "wav2vec2"])
def test_features_equal_transformers_hidden_states_at_every_layer(models, name):
    path, model = models[name]
    wav = _wav(2.0)[: 32000 - 77]
    normalize = name == "wavlm"  # layer norm without a preprocessor file: normalised; wav2vec2's file says no
    x = zero_mean_unit_var(torch.from_numpy(wav)).numpy() if normalize else wav
    with torch.inference_mode():
        hidden = model(torch.from_numpy(x)[None], output_hidden_states=True).hidden_states
    for layer in range(4):
        feats = SSLFeatures(str(path), layer)
        assert feats.reference.normalize == normalize and feats.hop_length == 320 and feats.dim == 32
        y = feats.features(wav)
        n = hidden[layer].shape[1]
        assert y.shape == (math.ceil(wav.shape[0] / 320), 32) and n == y.shape[0] - 1
        torch.testing.assert_close(y[:n], hidden[layer][0], atol=2e-5, rtol=1e-4)
        assert torch.equal(y[n], y[n - 1])  # frames past the model's own repeat its last one


def test_frame_counts_match_a_codec_of_the_same_hop(models):
    feats = SSLFeatures(str(models["hubert"][0]), 2)
    assert receptive_field((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == (400, 320)
    wav = _wav(1.0)
    for n in (1, 319, 320, 399, 400, 401, 640, 721, 16000):
        assert feats.features(wav[:n]).shape == (math.ceil(n / 320), 32)
        assert feats.model_frames(n) == (max(n, 400) - 400) // 320 + 1


@pytest.mark.parametrize("name", ["hubert", "wavlm"])
def test_long_files_in_windows_approach_the_whole_file(models, name):
    path = str(models[name][0])
    wav = _wav(9.0, seed=4)
    whole = SSLFeatures(path, 2, chunk_seconds=60.0).features(wav)
    windowed = SSLFeatures(path, 2, chunk_seconds=2.0, context_seconds=1.0).features(wav)
    assert windowed.shape == whole.shape
    cos = torch.nn.functional.cosine_similarity(windowed, whole, dim=-1)
    assert cos.min() > 0.99
    # without context each window is an independent file: further from the whole file than with context
    bare = SSLFeatures(path, 2, chunk_seconds=2.0, context_seconds=0.0).features(wav)
    assert (bare - whole).abs().mean() > (windowed - whole).abs().mean()


@pytest.mark.parametrize("name", ["hubert", "wavlm"])
def test_batches_equal_one_waveform_at_a_time(models, name):
    feats = SSLFeatures(str(models[name][0]), 3)
    wav = _wav(3.0, seed=2)
    wavs = [wav[:16000], wav[:16100], wav, wav[5000:21000], wav[:300]]
    for b, w in zip(feats.features_batch(wavs), wavs, strict=True):
        torch.testing.assert_close(b, feats.features(w), atol=1e-5, rtol=1e-5)
    if name == "hubert":  # group norm: zero padding changes every frame, so it must never be padded
        padded = feats.features(np.pad(wav[:16000], (0, 100)))[:50]
        assert not torch.allclose(padded, feats.features(wav[:16000]), atol=1e-4)


def test_bad_models_and_layers_are_one_line(models, tmp_path):
    path = str(models["hubert"][0])
    with pytest.raises(UserError, match=r"has 3 transformer layers; --layer must lie in \[0, 3\], got 4"):
        SSLFeatures(path, 4)
    with pytest.raises(UserError, match="no such folder"):
        SSLFeatures(str(tmp_path / "missing"), 1)
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "b")
    with pytest.raises(UserError, match="model_type 'bert' is not an audio SSL model"):
        SSLFeatures(str(tmp_path / "b"), 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="cannot be loaded"):
        SSLFeatures(str(tmp_path / "empty"), 1)
    broken = tmp_path / "nan"
    model = _save(transformers.HubertModel, transformers.HubertConfig, broken)
    with torch.no_grad():
        model.feature_projection.projection.weight[0, 0] = float("nan")
    model.save_pretrained(broken)
    with pytest.raises(UserError, match="utt-x: SSL features .* are not finite"):
        SSLFeatures(str(broken), 1).features(_wav(0.5), name="utt-x")


LENGTHS = (16000, 21920, 27840, 15900)


def _data_dir(tmp_path, rates=(SR,)):
    data = tmp_path / "data"
    data.mkdir()
    rows = []
    for n, samples in enumerate(LENGTHS):  # u0 and u3: one frame count, other sample counts
        rate = rates[n % len(rates)]
        wav = _wav(2.0, seed=10 + n)[:samples]
        if rate != SR:
            import librosa

            wav = librosa.resample(wav, orig_sr=SR, target_sr=rate)
        path = tmp_path / f"u{n}.wav"
        sf.write(path, wav, rate)
        rows.append(f"s{n % 2}-1-{n} {path}\n")
    (data / "wav.scp").write_text("".join(rows))
    return data


def test_train_kmeans_on_an_ssl_layer_extract_and_reload(models, tmp_path):
    path = models["wavlm"][0]
    data = _data_dir(tmp_path, rates=(SR, 8000, 44100))
    out = tmp_path / "km"
    args = ["train-kmeans", "--feature", "ssl", "--ssl-model", str(path), "--layer", "2", "--k", "6"]
    assert main([*args, "--data", str(data), "--out", str(out), "--iters", "3"]) == 0
    model = KMeansUnitModel.from_pretrained(out)
    cfg = model.config
    assert (cfg.ssl_model, cfg.ssl_layer, cfg.ssl_dim, cfg.frame_rate) == (str(path), 2, 32, 50.0)
    assert len(cfg.ssl_sha256) == 64 and cfg.ssl_normalize and not cfg.standardize
    # the exported centroids are the clustering in the raw layer's space: nearest centroid = our unit
    centroids = np.load(out / "centroids.npy")
    wav = _wav(1.0, seed=10)
    feats = SSLFeatures(str(path), 2).features(wav).numpy()
    nearest = ((feats[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    units = model.encode(torch.from_numpy(wav)[None, None])[0, 0]
    assert units.tolist() == nearest.tolist()
    # 8 kHz and 44.1 kHz files are resampled to the model's 16 kHz
    for nj in (1, 2):
        for job in range(1, nj + 1):
            run = ["extract-units", "--model", str(out), "--data", str(data), "--out", str(tmp_path / f"u{nj}")]
            assert main([*run, "--nj", str(nj), "--job", str(job)]) == 0
    one, two = read_levels(tmp_path / "u1"), read_levels(tmp_path / "u2")
    assert one == two and len(one) == 4
    for n, samples in enumerate(LENGTHS):
        assert len(one[f"s{n % 2}-1-{n}"][0]) == math.ceil(samples / 320)
        assert one[f"s{n % 2}-1-{n}"][0] == model.encode_file(tmp_path / f"u{n}.wav")[0].tolist()
    assert main([*args, "--data", str(data), "--out", str(out)]) == 2  # an existing model needs -f


def test_an_ssl_unit_model_refuses_a_moved_or_changed_ssl_model(models, tmp_path):
    import shutil

    src = tmp_path / "hub"
    shutil.copytree(models["hubert"][0], src)
    data = _data_dir(tmp_path)
    cfg = KMeansConfig(feature="ssl", k=4, ssl_model=str(src), ssl_layer=1, standardize=False)
    train_kmeans(data, tmp_path / "km.pt", cfg, iters=2, progress=False)
    assert (tmp_path / "km.centroids.npy").is_file()
    _save(transformers.HubertModel, transformers.HubertConfig, src, layer_norm_eps=1e-3)  # same shapes
    with torch.no_grad():
        other = transformers.HubertModel.from_pretrained(src)
        other.feature_projection.projection.weight.mul_(2)
        other.save_pretrained(src)
    with pytest.raises(UserError, match=r"clusters layer 1 of .*hub: SSL model .* has other weights"):
        KMeansUnitModel.from_pretrained(tmp_path / "km.pt")
    shutil.rmtree(src)
    with pytest.raises(UserError, match=r"clusters layer 1 of .*hub: SSL model .*hub: no such folder"):
        KMeansUnitModel.from_pretrained(tmp_path / "km.pt")
    run = ["extract-units", "--model", str(tmp_path / "km.pt"), "--data", str(data), "--out", str(tmp_path / "u")]
    assert main(run) == 2
