"""Model folders (config.json + model.safetensors) for the codec, the prior and k-means unit models, beside
the single .pt files: identical models back, no pickled code, clear errors, and the CLI takes either."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.checkpoint import VERSION, model_checksum
from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.models import Codec
from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.units import read_info, read_units
from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel

from .speech import SR, synth_utterance
from .test_units import make_data_dir, small_codec


def same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_codec_folder_round_trip(tmp_path):
    codec = small_codec()
    folder = codec.save_pretrained(tmp_path / "codec")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["format"] == "vqaudio-codec" and meta["version"] == VERSION and meta["vqaudio_version"]
    back = Codec.from_pretrained(folder)
    assert same_state(codec, back) and back.config == codec.config
    wav = torch.from_numpy(synth_utterance(0.5, seed=0))[None, None]
    assert torch.equal(back.encode(wav), codec.encode(wav))
    single = Codec.from_pretrained(codec.save_pretrained(tmp_path / "codec.pt"))
    assert same_state(single, back)


def test_prior_and_kmeans_folders_round_trip(tmp_path):
    torch.manual_seed(0)
    prior = WaveNetPrior(WaveNetConfig(codebook_size=16, n_q=2, residual_channels=8, skip_channels=8, layers=2))
    assert same_state(WaveNetPrior.from_pretrained(prior.save_pretrained(tmp_path / "prior")), prior)
    km = KMeansUnitModel(KMeansConfig(k=8))
    with torch.no_grad():
        for p in km.buffers():
            p.copy_(torch.randn_like(p.float()).to(p.dtype))
    assert same_state(KMeansUnitModel.from_pretrained(km.save_pretrained(tmp_path / "km")), km)


def test_a_unit_model_loaded_with_its_id_has_the_checksum_of_its_file(tmp_path):
    from vqaudio.checkpoint import model_checksum
    from vqaudio.units.model import load_unit_model_and_id

    km = KMeansUnitModel(KMeansConfig(k=8))
    paths = [small_codec().save_pretrained(tmp_path / "codec.pt"), small_codec().save_pretrained(tmp_path / "c")]
    paths.append(km.save_pretrained(tmp_path / "km.pt"))
    for path in paths:
        _, checksum = load_unit_model_and_id(path)
        assert checksum == model_checksum(path), path
    assert load_unit_model_and_id(paths[0])[1] != load_unit_model_and_id(paths[2])[1]


def test_a_folder_with_a_pickle_for_weights_is_refused(tmp_path):
    folder = small_codec().save_pretrained(tmp_path / "codec")

    class Boom:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    (folder / "model.safetensors").write_bytes(pickle.dumps({"w": Boom()}))
    with pytest.raises(UserError, match="model.safetensors: not loadable"):
        Codec.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors is missing"):
        Codec.from_pretrained(folder)


def test_a_folder_of_another_kind_is_refused(tmp_path):
    km = KMeansUnitModel(KMeansConfig(k=8)).save_pretrained(tmp_path / "km")
    with pytest.raises(UserError, match="expected a vqaudio codec file, this is a vqaudio kmeans file"):
        Codec.from_pretrained(km)


def test_a_hub_id_without_huggingface_hub_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(UserError, match="pip install huggingface_hub"):
        Codec.from_pretrained("someone/some-codec")


def test_the_cli_takes_a_model_folder(tmp_path):
    folder = small_codec().save_pretrained(tmp_path / "codec")
    data = make_data_dir(tmp_path, n=3)
    assert main(["extract-units", "--model", str(folder), "--data", str(data), "--out", str(tmp_path / "u")]) == 0
    assert read_info(tmp_path / "u").model_checksum == model_checksum(folder)
    assert len(read_units(tmp_path / "u" / "units")) == 3
    sf.write(tmp_path / "a.wav", synth_utterance(0.3, seed=2), SR)
    assert main(["encode", "--model", str(folder), str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.vqc")]) == 0
    assert main(["decode", "--model", str(folder), str(tmp_path / "a.vqc"), "-o", str(tmp_path / "b.wav")]) == 0
    assert np.asarray(sf.read(tmp_path / "b.wav")[0]).shape == (int(0.3 * SR),)
