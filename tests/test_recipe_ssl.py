"""recipes/librispeech/run.sh --unit_model ssl: k-means units of an SSL model's layer through stages 2-4, and
HuBERT iterations trained by the recipe itself (the prior's stage is the same for any units)."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.units import read_info, read_levels
from vqaudio.units.kmeans import KMeansUnitModel

from .speech import SHARED, make_corpus
from .test_recipe import recipe_copy, run
from .test_ssl import SMALL

transformers = pytest.importorskip("transformers")


def _corpus(tmp_path):
    if (SHARED / "LibriSpeech" / "train-clean-5").is_dir():
        return SHARED
    corpus = make_corpus(tmp_path / "corpus", "train-clean-5", speakers=3, utts=3)
    return make_corpus(corpus, "dev-clean-2", speakers=2, utts=2)


def test_recipe_with_ssl_units_from_a_given_model_and_from_its_own_iterations(tmp_path):
    rdir, env = recipe_copy(tmp_path)
    corpus = _corpus(tmp_path)
    torch.manual_seed(0)
    hub = tmp_path / "hubert"
    transformers.HubertModel(transformers.HubertConfig(**SMALL)).save_pretrained(hub)
    ssl = yaml.safe_load((rdir / "conf" / "ssl_tiny.yaml").read_text())
    ssl["model"].update({**SMALL, "conv_dim": 16})
    ssl["trainer"].update(max_steps=4, val_every=2, checkpoint_every=2)
    (rdir / "conf" / "ssl_test.yaml").write_text(yaml.safe_dump(ssl))
    common = ["--corpus_dir", str(corpus), "--unit_model", "ssl"]
    common += ["--ssl_layer", "1", "--ssl_k", "8", "--nj", "1"]
    bad = run(rdir, env, *common, "--stage", "2", "--tag", "none")
    assert bad.returncode != 0 and "--unit_model ssl needs --ssl_model" in bad.stderr
    done = run(rdir, env, *common, "--ssl_model", str(hub), "--tag", "given", "--stop_stage", "4")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = rdir / "exp" / "given"
    model = KMeansUnitModel.from_pretrained(exp / "kmeans_ssl")
    assert model.config.ssl_model == str(hub) and (exp / "kmeans_ssl" / "centroids.npy").is_file()
    wavs = dict(line.split(maxsplit=1) for line in (rdir / "data" / "dev_clean_2" / "wav.scp").read_text().splitlines())
    units = read_levels(exp / "units" / "dev_clean_2")
    assert read_info(exp / "units" / "dev_clean_2").codebook_size == 8
    for utt, path in wavs.items():
        assert units[utt][0] == model.encode_file(path)[0].tolist()
        assert len(units[utt][0]) == math.ceil(sf.info(path).frames / 320)
    assert "not resynthesized" in done.stdout and not (exp / "resynth").exists()
    again = run(rdir, env, *common, "--ssl_model", str(hub), "--tag", "given", "--stop_stage", "4")
    assert again.returncode == 0 and "training" not in again.stdout
    # two HuBERT iterations trained by the recipe: MFCC k-means -> it1 -> k-means of it1's layer -> it2
    iters = ["--ssl_iterations", "2", "--ssl_config", "conf/ssl_test.yaml", "--ssl_targets_k", "8"]
    done = run(rdir, env, *common, *iters, "--tag", "own", "--stage", "2", "--stop_stage", "3")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = rdir / "exp" / "own"
    assert KMeansUnitModel.from_pretrained(exp / "ssl" / "kmeans_it1").config.ssl_model == str(exp / "ssl" / "it1")
    assert KMeansUnitModel.from_pretrained(exp / "kmeans_ssl").config.ssl_model == str(exp / "ssl" / "it2")
    assert (exp / "ssl" / "it2" / "model.safetensors").is_file() and (
        exp / "units" / "train_clean_5" / "units"
    ).is_file()
