"""Padded batches of SSL features (vqaudio.units.ssl.SSLFeatures.features_batch) equal each waveform run alone,
for group-norm models (the first conv layer on each item alone) and layer-norm models, data2vec-audio's
stacked positional convolutions and wav2vec2-conformer's depthwise convolutions included; k-means units of a
padded batch with lengths equal the units of each waveform alone. Tiny random models saved to folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqaudio.errors import UserError
from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel
from vqaudio.units.ssl import SSLFeatures, length_batches

from .speech import synth_utterance
from .test_ssl import SMALL

transformers = pytest.importorskip("transformers")

KINDS = {  # name: (model class, config class, config beyond SMALL)
    "hubert_group": ("HubertModel", "HubertConfig", {}),
    "wav2vec2_group": ("Wav2Vec2Model", "Wav2Vec2Config", {}),
    "wavlm_layer": ("WavLMModel", "WavLMConfig", dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "data2vec_audio": ("Data2VecAudioModel", "Data2VecAudioConfig", dict(num_conv_pos_embeddings=2)),
    "conformer_group": ("Wav2Vec2ConformerModel", "Wav2Vec2ConformerConfig", dict(conv_depthwise_kernel_size=7)),
}
LENGTHS = (16000, 12321, 14999, 2600)  # one padded batch of four, in no order


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl_batching")
    out = {}
    for name, (model_cls, config_cls, extra) in KINDS.items():
        torch.manual_seed(0)
        config = getattr(transformers, config_cls)(**{**SMALL, **extra})
        getattr(transformers, model_cls)(config).eval().save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def _wavs() -> list[np.ndarray]:
    return [synth_utterance(n / 16000, seed=20 + i)[:n] for i, n in enumerate(LENGTHS)]


def _record_batches(feats: SSLFeatures) -> list:
    """The ``lengths`` of every batch ``feats`` runs from now on (None: one waveform)."""
    calls, run = [], feats._run

    def recorded(wavs, lengths=None):
        calls.append(lengths)
        return run(wavs, lengths)

    feats._run = recorded
    return calls


@pytest.mark.parametrize("name", list(KINDS))
def test_a_padded_batch_equals_each_waveform_alone(folders, name):
    feats = SSLFeatures(folders[name], [1, 3], max_padding=0.9)
    wavs = _wavs()
    assert length_batches(list(LENGTHS), 0.9, feats.batch_samples) == [[3, 1, 2, 0]]
    expect = {"hubert_group": True, "wav2vec2_group": True, "conformer_group": True}.get(name, False)
    assert feats.group_norm == expect
    first = feats.net.feature_extractor.conv_layers[0]
    runs = _record_batches(feats)
    batches = feats.features_batch(wavs)
    assert runs == [sorted(LENGTHS)]  # one padded batch
    for batched, wav in zip(batches, wavs, strict=True):
        alone = feats.features(wav)
        assert batched.shape == alone.shape
        assert (batched - alone).abs().max() <= 1e-4 * alone.abs().max()
    # the loaded model is as it was: its own first conv layer back, no hook left
    assert feats.net.feature_extractor.conv_layers[0] is first
    assert feats._time_convs and all(not conv._forward_pre_hooks for conv in feats._time_convs)


@pytest.mark.parametrize("name", ["data2vec_audio", "conformer_group"])
def test_convolutions_over_time_need_the_padding_zeroed(folders, name):
    """transformers does not mask the padding before these convolutions: without the zeroing the frames near each
    item's end would differ from the item alone."""
    feats = SSLFeatures(folders[name], 3, max_padding=0.9)
    wavs = _wavs()
    exact = feats.features_batch(wavs)
    feats._time_convs = []
    unmasked = feats.features_batch(wavs)
    assert max(float((a - b).abs().max()) for a, b in zip(exact, unmasked, strict=True)) > 1e-2


@pytest.mark.parametrize("name", ["hubert_group", "wav2vec2_group", "data2vec_audio"])
def test_kmeans_units_of_a_padded_batch_equal_the_units_alone(folders, name):
    feats = SSLFeatures(folders[name], 2)
    wavs = _wavs()
    frames = torch.cat([feats.features(w) for w in wavs])
    centroids = frames[torch.randperm(frames.shape[0], generator=torch.Generator().manual_seed(0))[:16]]
    cfg = KMeansConfig(feature="ssl", k=16, ssl_model=folders[name], ssl_layer=2, ssl_dim=32, standardize=False)
    model = KMeansUnitModel(cfg, centroids, ssl=feats).eval()
    feats.max_padding = 0.9
    runs = _record_batches(feats)
    batch = torch.zeros(len(wavs), 1, max(LENGTHS))
    for b, w in enumerate(wavs):
        batch[b, 0, : w.shape[0]] = torch.from_numpy(w)
    units = model.encode(batch, lengths=list(LENGTHS))
    assert runs == [sorted(LENGTHS)]
    for b, w in enumerate(wavs):
        alone = model.encode(torch.from_numpy(w)[None, None])[0, 0]
        assert units[b, 0, : alone.shape[0]].tolist() == alone.tolist()
        assert len(set(alone.tolist())) > 1


def test_length_batches_bound_the_padding_and_the_samples():
    lengths = [1000, 1000, 950, 3000, 1200, 990, 2900, 100_000, 1000]
    batches = length_batches(lengths, 0.1, 8000)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches == [[2, 5, 0, 1, 8], [4], [6, 3], [7]]  # 1200 would pad the first batch by 14.7 %
    for b in batches:
        longest = max(lengths[i] for i in b)
        assert len(b) * longest - sum(lengths[i] for i in b) <= 0.1 * len(b) * longest
        assert len(b) == 1 or len(b) * longest <= 8000
    assert length_batches([1000] * 5, 0.1, 3000) == [[0, 1, 2], [3, 4]]  # the samples bound
    assert length_batches([5, 5, 6, 5], 0.0, 100) == [[0, 1, 3], [2]]  # 0: equal lengths only
    assert length_batches([], 0.1, 10) == []
    with pytest.raises(ValueError, match=r"max_padding must lie in \[0, 1\) and max_samples be >= 1, got 1.0, 10"):
        length_batches([5], 1.0, 10)


def test_on_the_cpu_only_equal_lengths_batch_by_default(folders):
    feats = SSLFeatures(folders["hubert_group"], 1)
    runs = _record_batches(feats)
    wav = _wavs()[0]
    feats.features_batch([wav, wav[:15000], wav])
    assert runs == [[15000], [16000, 16000]]


def test_batch_settings_are_checked(folders):
    with pytest.raises(UserError, match=r"batch_seconds must be > 0 and max_padding in \[0, 1\), got 0.0, None"):
        SSLFeatures(folders["hubert_group"], 1, batch_seconds=0.0)
    with pytest.raises(UserError, match=r"got 60.0, -0.5"):
        SSLFeatures(folders["hubert_group"], 1, max_padding=-0.5)
