"""The unit vocoder: model, F0, files, train-vocoder, resynth with a vocoder, convert."""

from __future__ import annotations

import json
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.checkpoint import model_checksum
from vqaudio.errors import UserError
from vqaudio.models.vocoder import (
    F0Cache,
    F0Stats,
    Vocoder,
    VocoderConfig,
    f0_stats,
    frame_log_f0,
    quantize_f0,
    read_embeddings,
)

from .speech import SHARED, make_corpus

SMALL = dict(
    codebook_size=16,
    embed_dim=8,
    prenet_channels=8,
    latent_dim=8,
    channels=4,
    max_channels=16,
    activation="elu",
    dilations=[1],
    speaker_dim=8,
    reference_mels=16,
    reference_channels=8,
)


def small(**kw) -> Vocoder:
    return Vocoder(VocoderConfig(**{**SMALL, **kw}))


@pytest.mark.parametrize("mode", ["table", "reference", "external", "none"])
def test_shapes_hop_and_gradients_reach_every_part(mode):
    v = small(speaker=mode, speakers=["a", "b"], external_dim=6, levels=[0, 1], f0=True).train()
    units = torch.randint(0, 16, (2, 2, 7))
    speaker = {
        "table": torch.tensor([0, 1]),
        "reference": 0.1 * torch.randn(2, 1, 16000),
        "external": torch.randn(2, 6),
        "none": None,
    }[mode]
    f0 = torch.randint(0, v.config.f0_bins + 2, (2, 7))
    wav = v(units, speaker, f0)
    assert wav.shape == (2, 1, 7 * 320) and v.hop_length == 320
    wav.square().mean().backward()
    parts = {
        "embeddings": v.embeddings[1].weight,
        "f0": v.f0_embedding.weight,
        "prenet": v.prenet.net[0].conv.parametrizations.weight.original1,
        "decoder": next(v.decoder.parameters()),  # its first layer: the gradient went through all of it
    }
    if mode != "none":
        encoder = v.speaker_encoder.convs[0] if mode == "reference" else v.speaker_encoder
        parts.update(speaker=encoder.weight, proj=v.speaker_proj.weight)
    for name, p in parts.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_speaker_dropout_uses_the_learned_null_speaker():
    v = small(speaker="table", speakers=["a", "b"], speaker_dropout=1.0)
    with torch.no_grad():
        v.null_speaker.normal_()
    units = torch.randint(0, 16, (2, 1, 5))
    v.train()
    dropped = v(units, torch.tensor([0, 1]))
    v.eval()
    none = v(units, None)
    kept = v(units, torch.tensor([0, 1]))
    assert torch.allclose(dropped, none, atol=1e-6)
    assert not torch.allclose(kept, none, atol=1e-4)
    # the table's "no speaker" index is the same null vector
    assert torch.allclose(v(units, torch.tensor([-1, -1])), none, atol=1e-6)


def test_generate_equals_forward_and_bad_units_are_refused():
    v = small(speaker="none").eval()
    units = torch.randint(0, 16, (1, 1, 9))
    assert torch.allclose(v.generate(units), v(units), atol=1e-5)
    with pytest.raises(UserError, match=r"unit 16 is outside this vocoder's vocabulary \[0, 15\]"):
        v(torch.full((1, 1, 4), 16))
    with pytest.raises(UserError, match="unit -1"):
        v(torch.full((1, 1, 4), -1))


def test_config_values_are_checked_by_name():
    assert VocoderConfig().receptive_frames == 41  # 0.82 s of units at 50 Hz
    with pytest.raises(UserError, match="speaker must be one of"):
        VocoderConfig(speaker="lookup")
    with pytest.raises(UserError, match=r"strides \[2, 4, 5\] give hop 40, but hop_length is 320"):
        VocoderConfig(strides=[2, 4, 5])
    with pytest.raises(UserError, match="speaker_dropout"):
        VocoderConfig(speaker_dropout=1.5)
    with pytest.raises(UserError, match="levels"):
        VocoderConfig(levels=[0, 0])


def test_unknown_speaker_lists_the_known_ones():
    v = small(speaker="table", speakers=["1272", "2412"])
    assert v.speaker_index("2412") == 1
    with pytest.raises(UserError, match=r"unknown speaker '9999'; this vocoder knows: 1272, 2412"):
        v.resynthesize(torch.zeros(5, dtype=torch.long), speaker="9999")


def test_short_or_silent_reference_is_one_line():
    v = small(speaker="reference", reference_min_seconds=1.0).eval()
    units = torch.zeros(5, dtype=torch.long)
    with pytest.raises(UserError, match=r"reference: 0.50 s of audio; the speaker encoder needs at least 1.00 s"):
        v.resynthesize(units, reference=0.1 * torch.randn(8000))
    with pytest.raises(UserError, match="reference: silent"):
        v.resynthesize(units, reference=torch.zeros(32000))
    assert v.resynthesize(units, reference=0.1 * torch.randn(20000)).shape == (5 * 320,)


def test_f0_normalisation_and_quantisation_on_known_values():
    stats = F0Stats(mean=np.log(100.0), std=0.5)
    log_f0 = np.array([np.nan, np.log(100.0), np.log(100.0) + 0.5, np.log(100.0) - 10.0, np.log(100.0) + 10.0])
    bins = quantize_f0(log_f0, stats, bins=4, limit=2.0)
    # z = [unvoiced, 0, 1, -2 (clipped), 2 (clipped)] over [-2, 2] in 4 bins: 1 + floor((z + 2) / 4 * 4)
    assert bins.tolist() == [0, 3, 4, 1, 4]
    assert quantize_f0(log_f0, None, 4, 2.0).tolist() == [0] * 5
    s = f0_stats([np.array([np.log(100.0), np.nan]), np.array([np.log(400.0)])])
    assert s.mean == pytest.approx(np.log(200.0)) and s.std == pytest.approx(np.log(2.0))
    assert f0_stats([np.full(3, np.nan)]) is None
    # speaker-normalised: the same contour an octave up gives the same bins
    up = np.log(2.0) + log_f0
    assert quantize_f0(up, F0Stats(stats.mean + np.log(2.0), stats.std), 4, 2.0).tolist() == bins.tolist()


def test_f0_of_a_tone_and_of_silence():
    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    track = frame_log_f0(tone, sr, 320)
    assert track.shape == (50,)
    voiced = np.isfinite(track)
    assert voiced.mean() > 0.8 and np.allclose(np.exp(track[voiced]), 200, rtol=0.03)
    silence = frame_log_f0(np.zeros(sr // 2, dtype=np.float32), sr, 320)  # no voiced frame: unvoiced, not an error
    assert silence.shape == (25,) and np.isnan(silence).all()
    assert small(f0=True, speaker="none").source_f0(np.zeros(sr // 2, dtype=np.float32), 25).tolist() == [0] * 25


def test_f0_cache_reuses_its_files(tmp_path):
    wav = (0.5 * np.sin(2 * np.pi * 150 * np.arange(8000) / 16000)).astype(np.float32)
    cache = F0Cache(tmp_path / "f0", 16000, 320)
    first = cache(wav)
    again = F0Cache(tmp_path / "f0", 16000, 320)
    second = again(wav)
    assert (cache.misses, again.hits, again.misses) == (1, 1, 0)
    assert np.allclose(first, second, atol=2e-3, equal_nan=True)
    assert len(list((tmp_path / "f0").glob("*.npz"))) == 1
    assert F0Cache(tmp_path / "f0", 16000, 160).path(wav) != cache.path(wav)  # settings are in the key


def test_embedding_table(tmp_path):
    path = tmp_path / "xvector.txt"
    path.write_text("spk1 [ 1 2 3 ]\nspk2 4 5 6\n")
    table = read_embeddings(path)
    assert table["spk1"].tolist() == [1, 2, 3] and table["spk2"].tolist() == [4, 5, 6]
    path.write_text("spk1 1 2 3\nspk2 4 5\n")
    with pytest.raises(UserError, match=r"xvector.txt:2: expected 3 finite values for 'spk2', got 2"):
        read_embeddings(path)


def kmeans_model(path: pathlib.Path, k: int = 16) -> pathlib.Path:
    """A k-means unit model with random centroids (a real unit model, untrained)."""
    from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel

    cfg = KMeansConfig(k=k)
    return KMeansUnitModel(cfg, torch.randn(k, cfg.dim)).save_pretrained(path)


def test_save_and_load_give_the_same_output_and_carry_the_unit_model(tmp_path):
    km = kmeans_model(tmp_path / "km.pt")
    cfg = VocoderConfig(**{**SMALL, "speaker": "table", "speakers": ["a", "b"], "f0": True})
    v = Vocoder(cfg, unit_model=km).eval()
    out = v.save_pretrained(tmp_path / "voc" / "model.pt")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "unit_model"]
    loaded = Vocoder.from_pretrained(out)
    units = torch.randint(0, 16, (1, 1, 6))
    f0 = torch.randint(0, 34, (1, 6))
    assert torch.equal(loaded.generate(units, torch.tensor([1]), f0), v.generate(units, torch.tensor([1]), f0))
    assert loaded.config == v.config
    assert model_checksum(out / "unit_model") == model_checksum(km) == loaded.config.unit_model
    assert loaded.unit_model().codebook_size == 16
    with pytest.raises(UserError, match="a model is already there"):
        v.save_pretrained(out)


# end to end on real speech ------------------------------------------------------------------------------------

TINY = pathlib.Path(__file__).resolve().parents[1] / "recipes" / "librispeech" / "conf" / "vocoder_tiny.yaml"


def _corpus(tmp: pathlib.Path) -> pathlib.Path:
    corpus = SHARED / "LibriSpeech"
    if (corpus / "train-clean-5").is_dir() and (corpus / "dev-clean-2").is_dir():
        return corpus
    make_corpus(tmp / "corpus", "train-clean-5", speakers=3, utts=3, seconds=3.0)
    make_corpus(tmp / "corpus", "dev-clean-2", speakers=1, utts=2, seconds=3.0)
    return tmp / "corpus" / "LibriSpeech"


def _data_dir(out: pathlib.Path, files: list[pathlib.Path], seconds: float | None = None) -> pathlib.Path:
    """A Kaldi data dir over ``files`` (speaker: the id's prefix), each cut to its first ``seconds``."""
    out.mkdir(parents=True)
    ids = [f.stem for f in files]
    (out / "wav.scp").write_text("".join(f"{i} {f}\n" for i, f in zip(ids, files, strict=True)))
    (out / "utt2spk").write_text("".join(f"{i} {i.split('-')[0]}\n" for i in ids))
    if seconds is not None:
        (out / "segments").write_text("".join(f"{i} {i} 0.0 {seconds}\n" for i in ids))
    return out


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Data dirs over the mini subsets, a k-means unit model and a tiny (untrained) codec, and their units."""
    import yaml

    from vqaudio.config import from_dict
    from vqaudio.models.codec import Codec, CodecConfig
    from vqaudio.units.extract import extract_units
    from vqaudio.units.kmeans import KMeansConfig, train_kmeans

    tmp = tmp_path_factory.mktemp("speech")
    corpus = _corpus(tmp)
    train_files = sorted((corpus / "train-clean-5").rglob("*.flac"))
    dev_files = sorted((corpus / "dev-clean-2").rglob("*.flac"))
    train = _data_dir(tmp / "data" / "train", train_files)
    short = _data_dir(tmp / "data" / "short", train_files[:6], seconds=2.0)  # little audio for pYIN
    train_kmeans(train, tmp / "km.pt", KMeansConfig(k=16), iters=3, progress=False)
    codec_cfg = yaml.safe_load((TINY.parent / "codec_tiny.yaml").read_text())["model"]
    Codec(from_dict(CodecConfig, codec_cfg)).save_pretrained(tmp / "codec.pt")
    extract_units(tmp / "km.pt", train, tmp / "units_km", progress=False)
    extract_units(tmp / "codec.pt", short, tmp / "units_codec", progress=False)
    return dict(
        tmp=tmp,
        train=train,
        short=short,
        km=tmp / "km.pt",
        codec=tmp / "codec.pt",
        units_km=tmp / "units_km",
        units_codec=tmp / "units_codec",
        dev=dev_files,
    )


def _config(tmp: pathlib.Path, name: str, **model) -> pathlib.Path:
    import yaml

    cfg = yaml.safe_load(TINY.read_text())
    cfg["model"].update(model)
    cfg["loss"]["adversarial_start"] = 2  # the adversarial phase runs too
    cfg["trainer"].update(val_every=2, checkpoint_every=2, log_every=1)
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(conf, units, data, unit_model, exp, *extra) -> int:
    from vqaudio.cli.main import main

    argv = ["train-vocoder", "--config", str(conf), "--units", str(units), "--data", str(data)]
    return main([*argv, "--unit-model", str(unit_model), "--exp-dir", str(exp), *extra])


def _steps(exp: pathlib.Path) -> int:
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    return int(ckpt["state_dict"]["gen_steps"])


def test_train_vocoder_on_kmeans_units_resumes_and_resynthesizes_a_training_speaker(speech, capsys):
    from vqaudio.cli.main import main

    tmp = speech["tmp"]
    exp = tmp / "exp_km"
    conf = _config(tmp, "km.yaml", speaker="table")
    assert _train(conf, speech["units_km"], speech["train"], speech["km"], exp, "--max-steps", "3") == 0
    assert _steps(exp) == 3
    for name in ("config.yaml", "log/train.log", "model.pt/config.json", "model.pt/unit_model/config.json"):
        assert (exp / name).is_file(), name
    assert _train(conf, speech["units_km"], speech["train"], speech["km"], exp, "--max-steps", "3") == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _train(conf, speech["units_km"], speech["train"], speech["km"], exp, "--max-steps", "5", "--resume") == 0
    assert _steps(exp) == 5
    vocoder = Vocoder.from_pretrained(exp / "model.pt")
    speakers = vocoder.config.speakers
    assert vocoder.config.levels == [0] and len(speakers) >= 2 and vocoder.config.codebook_size == 16
    out = tmp / "resynth_km"
    units = ["--units", str(speech["units_km"])]
    argv = ["resynth", "--vocoder", str(exp / "model.pt"), *units, "--out", str(out)]
    assert main([*argv, "--speaker", speakers[0]]) == 0
    scp = (out / "wav.scp").read_text().splitlines()
    assert len(scp) == len((speech["train"] / "wav.scp").read_text().splitlines())
    utt, path = scp[0].split()
    wav, sr = sf.read(path)
    frames = len((speech["units_km"] / "units").read_text().splitlines()[0].split()) - 1
    assert sr == 16000 and wav.shape == (frames * 320,) and np.abs(wav).max() > 0
    # conversion into a training speaker's voice
    conv = ["convert", "--vocoder", str(exp / "model.pt"), "--source", str(speech["dev"][0])]
    assert main([*conv, "--speaker", speakers[-1], "-o", str(tmp / "to_speaker.wav")]) == 0
    assert sf.info(tmp / "to_speaker.wav").frames == sf.info(speech["dev"][0]).frames
    capsys.readouterr()
    assert main([*conv, "--speaker", "nobody", "-o", str(tmp / "nobody.wav")]) == 2
    assert "unknown speaker 'nobody'" in capsys.readouterr().err and not (tmp / "nobody.wav").exists()
    assert main([*argv[:-1], str(tmp / "unknown"), "--speaker", "nobody"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"unknown speaker 'nobody'; this vocoder knows: {speakers[0]}, " in err
    assert not (tmp / "unknown").exists()


def test_units_of_another_unit_model_or_outside_the_vocabulary_are_refused(speech, capsys):
    from vqaudio.cli.main import main

    tmp = speech["tmp"]
    conf = _config(tmp, "other.yaml")
    assert _train(conf, speech["units_km"], speech["train"], speech["codec"], tmp / "exp_other") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "were made by another unit model" in err
    assert not (tmp / "exp_other" / "model.pt").exists()
    # a vocoder of the k-means units: the codec's units are refused, and units beyond its 16
    km = Vocoder(VocoderConfig(**{**SMALL, "speaker": "none"}), unit_model=speech["km"])
    km.save_pretrained(tmp / "voc_small")
    argv = ["resynth", "--vocoder", str(tmp / "voc_small"), "--out", str(tmp / "r_other")]
    assert main([*argv, "--units", str(speech["units_codec"])]) == 2
    assert "were made by another unit model than" in capsys.readouterr().err
    bad = tmp / "units_oov"
    bad.mkdir()
    (bad / "units.json").write_text((speech["units_km"] / "units.json").read_text())
    lines = (speech["units_km"] / "units").read_text().splitlines()
    (bad / "units").write_text("\n".join([lines[0] + " 16", *lines[1:]]) + "\n")
    assert main([*argv, "--units", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "has unit 16, outside" in err and "vocabulary [0, 15]" in err
    assert not (tmp / "r_other").exists() or not list((tmp / "r_other").glob("*.wav"))


def test_codec_level0_vocoder_with_reference_voice_and_f0_resynthesizes_and_converts(speech, capsys):
    from vqaudio.cli.main import main
    from vqaudio.data.audio import load_audio

    tmp = speech["tmp"]
    exp = tmp / "exp_codec"
    conf = _config(tmp, "codec.yaml", speaker="reference", f0=True, reference_seconds=1.5)
    args = (conf, speech["units_codec"], speech["short"], speech["codec"], exp)
    assert _train(*args, "--levels", "0", "--max-steps", "2") == 0
    log = (exp / "log" / "train.log").read_text()
    assert "F0 cache" in log and "0 reused, 6 computed" in log
    # a resumed run reads the F0 tracks from the cache instead of running pYIN again
    assert _train(*args, "--max-steps", "3", "--resume") == 0
    assert _steps(exp) == 3
    assert "6 reused, 0 computed" in (exp / "log" / "train.log").read_text()
    model = exp / "model.pt"
    vocoder = Vocoder.from_pretrained(model)
    assert (
        vocoder.config.levels == [0]
        and vocoder.config.f0
        and vocoder.config.unit_model == model_checksum(speech["codec"])
    )
    reference = speech["dev"][0]
    out = tmp / "resynth_codec"
    argv = ["resynth", "--vocoder", str(model), "--units", str(speech["units_codec"]), "--reference", str(reference)]
    assert main([*argv, "--data", str(speech["short"]), "--f0", "source", "--out", str(out)]) == 0
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 6 and all(sf.info(w).frames == 100 * 320 for w in wavs)  # 2 s = 100 frames
    # a rerun keeps what is there
    stamp = wavs[0].stat().st_mtime_ns
    assert main([*argv, "--data", str(speech["short"]), "--out", str(out)]) == 0
    assert wavs[0].stat().st_mtime_ns == stamp
    # --f0 source without the source audio, and a reference too short: one line, nothing written
    capsys.readouterr()
    assert main([*argv, "--f0", "source", "--out", str(tmp / "no_data")]) == 2
    assert "--f0 source needs the source audio: give --data" in capsys.readouterr().err
    short_ref = tmp / "short_ref.wav"
    sf.write(short_ref, load_audio(str(reference), 16000)[:8000], 16000)
    argv[-1] = str(short_ref)
    assert main([*argv, "--out", str(tmp / "short_out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "0.50 s of audio; the speaker encoder needs at least 1.00 s" in err
    assert not (tmp / "short_out").exists()

    # convert: one file, a directory with an unreadable file among good ones, and the Python API
    source = speech["dev"][1]
    conv = ["convert", "--vocoder", str(model), "--reference", str(reference)]
    assert main([*conv, "--source", str(source), "-o", str(tmp / "converted.wav")]) == 0
    src = load_audio(str(source), 16000)
    assert sf.info(tmp / "converted.wav").frames == src.shape[0]
    sources = tmp / "sources"
    sources.mkdir()
    sf.write(sources / "a.wav", src[:32000], 16000)
    (sources / "broken.wav").write_bytes(b"RIFF not audio")
    capsys.readouterr()
    assert main([*conv, "--source", str(sources), "-o", str(tmp / "converted")]) == 1
    captured = capsys.readouterr()
    assert "broken.wav" in captured.err and "converted 1 file(s)" in captured.out
    assert sorted(p.name for p in (tmp / "converted").iterdir()) == ["a.wav", "request.json"]
    api = vocoder.convert(src[:32000], load_audio(str(reference), 16000))
    assert api.shape == (32000,) and float(api.abs().max()) <= 1.0
    assert torch.allclose(api, torch.from_numpy(sf.read(tmp / "converted" / "a.wav", dtype="float32")[0]), atol=1e-3)
    with pytest.raises(UserError, match="silent"):
        vocoder.convert(src[:32000], np.zeros(32000, dtype=np.float32))


def test_external_speaker_embeddings_from_a_table_or_computed_with_ge2e(speech, capsys, monkeypatch):
    import sys

    import yaml

    from vqaudio.cli.main import main

    tmp = speech["tmp"]
    units, data, km = speech["units_km"], speech["train"], speech["km"]
    speakers = sorted({line.split()[1] for line in (data / "utt2spk").read_text().splitlines()})
    table = tmp / "xvector.txt"
    table.write_text("".join(f"{s} {' '.join(str(i + k) for k in range(4))}\n" for i, s in enumerate(speakers)))
    conf = _config(tmp, "ext.yaml", speaker="external")  # external_dim comes from the table
    cfg = yaml.safe_load(conf.read_text())
    cfg["data"]["speaker_embeddings"] = str(table)
    conf.write_text(yaml.safe_dump(cfg))
    exp = tmp / "exp_ext_table"
    assert _train(conf, units, data, km, exp, "--max-steps", "2") == 0
    vocoder = Vocoder.from_pretrained(exp / "model.pt")
    assert vocoder.config.external_dim == 4
    wav = vocoder.resynthesize(torch.zeros(1, 10, dtype=torch.long), speaker=np.arange(4, dtype=np.float32))
    assert wav.shape == (10 * 320,)

    # without a table, Resemblyzer's GE2E speaker embeddings are computed (256-d), and a missing package is a line
    conf = _config(tmp, "ge2e.yaml", speaker="external")
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    capsys.readouterr()
    assert _train(conf, units, data, km, tmp / "exp_ge2e", "--max-steps", "2") == 2
    err = capsys.readouterr().err
    line = err.splitlines()[-1]  # after the audio-reading progress bar
    assert "Traceback" not in err and line.startswith("vqaudio train-vocoder: error: external speaker embeddings")
    assert line.endswith(
        "needs the resemblyzer package (import of resemblyzer halted; None in sys.modules): pip install 'vqaudio[eval]'"
    )
    monkeypatch.delitem(sys.modules, "resemblyzer")
    assert _train(conf, units, data, km, tmp / "exp_ge2e2", "--max-steps", "2") == 0
    computed = read_embeddings(tmp / "exp_ge2e2" / "speaker_embeddings.txt")
    assert sorted(computed) == speakers and all(v.shape == (256,) for v in computed.values())
    out = tmp / "resynth_ge2e"
    argv = ["resynth", "--vocoder", str(tmp / "exp_ge2e2" / "model.pt"), "--units", str(units), "--out", str(out)]
    assert main([*argv, "--reference", str(speech["dev"][0])]) == 0
    assert len(list(out.glob("*.wav"))) == len((data / "wav.scp").read_text().splitlines())


def test_codec_levels_choose_the_streams_and_a_unit_model_of_another_hop_is_refused(speech, capsys):
    from vqaudio.cli.main import main
    from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel

    tmp = speech["tmp"]
    conf = _config(tmp, "levels.yaml", speaker="none")
    exp = tmp / "exp_levels"
    args = (conf, speech["units_codec"], speech["short"], speech["codec"])
    assert _train(*args, exp, "--levels", "0,1", "--max-steps", "1") == 0
    vocoder = Vocoder.from_pretrained(exp / "model.pt")
    assert vocoder.config.levels == [0, 1] and len(vocoder.embeddings) == 2
    out = tmp / "resynth_levels"
    argv = ["resynth", "--vocoder", str(exp / "model.pt"), "--units", str(speech["units_codec"]), "--out", str(out)]
    assert main(argv) == 0 and len(list(out.glob("*.wav"))) == 6
    capsys.readouterr()
    assert _train(*args, tmp / "exp_level2", "--levels", "0,2") == 2
    assert "has 2 level(s) of units; levels [0, 2] asked for" in capsys.readouterr().err
    cfg = KMeansConfig(k=16, frame_rate=100.0)
    KMeansUnitModel(cfg, torch.randn(16, cfg.dim)).save_pretrained(tmp / "km100.pt")
    assert _train(conf, speech["units_km"], speech["train"], tmp / "km100.pt", tmp / "exp_hop") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hop 160 (100 frames/s at 16000 Hz), but the vocoder's decoder strides" in err


def test_own_voice_resynthesis_and_conversions_of_a_data_dir_scored_as_conversions(speech, capsys):
    import csv

    from vqaudio.cli.main import main
    from vqaudio.data.audio import load_audio
    from vqaudio.scoring.speaker import SpeakerEncoder, cosine, mean_embedding

    tmp = speech["tmp"]
    exp = tmp / "exp_voice"
    conf = _config(tmp, "voice.yaml", speaker="reference", reference_seconds=1.5)
    short = speech["short"]  # the first 2 s of six training utterances
    spk = dict(line.split() for line in (short / "utt2spk").read_text().splitlines())
    by_spk: dict[str, list[str]] = {}
    for utt in sorted(spk):
        by_spk.setdefault(spk[utt], []).append(utt)
    assert _train(conf, speech["units_codec"], short, speech["codec"], exp, "--max-steps", "2") == 0
    model = str(exp / "model.pt")
    out = tmp / "own_voice"
    argv = ["resynth", "--vocoder", model, "--units", str(speech["units_codec"]), "--own-voice"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "--own-voice takes each speaker's voice from its other utterances: give --data" in capsys.readouterr().err
    assert main([*argv, "--data", str(short), "--out", str(out)]) == 0
    chosen = dict(line.split() for line in (out / "utt2reference").read_text().splitlines())
    assert len(list(out.glob("*.wav"))) == 6 and sorted(chosen) == sorted(spk)
    for utt, ref in chosen.items():  # another utterance of the speaker, or itself when the speaker has no other
        assert spk[ref] == spk[utt] and (ref != utt) == (len(by_spk[spk[utt]]) > 1)

    (s1, first), (s2, second) = list(by_spk.items())[:2]
    a, b = first[0], second[0]
    pairs = tmp / "pairs"
    pairs.write_text(f"{a} {second[0]}\n{b} {first[-1]}\n")
    conv = tmp / "conversions"
    assert main(["convert", "--vocoder", model, "--data", str(short), "--pairs", str(pairs), "-o", str(conv)]) == 0
    assert sorted(p.stem for p in conv.glob("*.wav")) == sorted([a, b])
    assert (conv / "utt2target").read_text() == "".join(sorted([f"{a} {s2}\n", f"{b} {s1}\n"]))
    assert sorted((conv / "utt2reference").read_text().splitlines()) == sorted(pairs.read_text().splitlines())
    # the Python API example converts one file the same way
    example = pathlib.Path(__file__).resolve().parents[1] / "egs" / "voice_conversion.py"
    sources = dict(line.split() for line in (short / "wav.scp").read_text().splitlines())
    out_wav = tmp / "example.wav"
    cmd = [sys.executable, str(example), "--vocoder", model, "--source", sources[a], "--reference", sources[b]]
    proc = subprocess.run([*cmd, "--out", str(out_wav)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sf.info(out_wav).frames == sf.info(sources[a]).frames and "frames of 256-way units" in proc.stdout
    bad = tmp / "bad_pairs"
    bad.write_text(f"{a} {b}\n{first[-1]} nobody\n")
    capsys.readouterr()
    assert main(["convert", "--vocoder", model, "--data", str(short), "--pairs", str(bad), "-o", str(tmp / "x")]) == 2
    assert f"{bad}:2: 'nobody' is not an utterance of {short}" in capsys.readouterr().err
    assert not (tmp / "x").exists()

    # scoring conversions: hypotheses that are the target speakers' own audio (a perfect conversion), so the
    # figures are real speech; utt2target and utt2reference as convert wrote them
    perfect = tmp / "perfect_conversions"
    perfect.mkdir()
    for name in ("utt2target", "utt2reference"):
        (perfect / name).write_text((conv / name).read_text())
    (perfect / "wav.scp").write_text(f"{a} {sources[second[-1]]}\n{b} {sources[first[0]]}\n")
    scored = tmp / "eval_conversions"
    assert main(["evaluate", "--ref", str(short), "--hyp", str(perfect), "--speaker-sim", "--out", str(scored)]) == 0
    summary = json.loads((scored / "metrics.json").read_text())
    rows = {r["utt"]: r for r in csv.DictReader((scored / "per_utterance.csv").open())}
    assert rows[b]["target_speaker"] == s1 and rows[a]["target_speaker"] == s2
    # SECS to the target: its utterances but the copied references; to the source: the source speaker's other
    # utterances. A side with no such utterance could only compare with the clip itself: left out and counted.
    encoder = SpeakerEncoder()

    def embed(utt, whole=False):
        return encoder.embed(load_audio(sources[utt], 16000, 0.0, None if whole else 2.0))

    copied = {second[0], first[-1]}
    voice = [u for u in second if u not in copied]
    assert voice and float(rows[a]["speaker_similarity"]) == pytest.approx(
        cosine(embed(second[-1], whole=True), mean_embedding(list(map(embed, voice)))), abs=1e-4
    )
    if [u for u in first if u not in copied]:
        assert not math.isnan(float(rows[b]["speaker_similarity"]))
    else:  # the target's only utterance is the reference the voice was copied from
        assert math.isnan(float(rows[b]["speaker_similarity"])) and summary["speaker_similarity_self_reference"] >= 1
    own = [u for u in second if u != b]
    assert own and float(rows[b]["speaker_similarity_source"]) == pytest.approx(
        cosine(embed(first[0], whole=True), mean_embedding(list(map(embed, own)))), abs=1e-4
    )
    scored = [
        r
        for r in rows.values()
        if not math.isnan(float(r["speaker_similarity"]) - float(r["speaker_similarity_source"]))
    ]
    assert summary["conversions"] == len(scored) == summary["utterances"]["conversion_margin"]
    if scored:
        margins = [float(r["speaker_similarity"]) - float(r["speaker_similarity_source"]) for r in scored]
        assert summary["conversion_margin"] == pytest.approx(sum(margins) / len(margins))
    else:
        assert summary["conversion_margin"] is None


def test_init_decoder_takes_the_codecs_decoder_shape_and_weights(speech, capsys):
    from vqaudio.models.codec import Codec, CodecConfig

    tmp = speech["tmp"]
    torch.manual_seed(0)
    cfg = CodecConfig(
        encoder="seanet", channels=4, encoder_channels=4, latent_dim=16, max_channels=16, lstm=0, decoder="istft"
    )
    codec = Codec(CodecConfig(**{**vars(cfg), "decoder_dim": 12, "decoder_blocks": 2}))
    with torch.no_grad():
        for p in codec.decoder.parameters():
            p.add_(torch.randn_like(p))  # far from any fresh initialisation
    codec.save_pretrained(tmp / "istft_codec.pt")
    conf = _config(tmp, "init.yaml", speaker="none")
    exp = tmp / "exp_init"
    args = (conf, speech["units_codec"], speech["short"], speech["codec"], exp)
    assert _train(*args, "--init-decoder", str(tmp / "istft_codec.pt"), "--max-steps", "1") == 0
    vocoder = Vocoder.from_pretrained(exp / "model.pt")
    assert vocoder.config.decoder == "istft" and (vocoder.config.decoder_dim, vocoder.config.latent_dim) == (12, 16)
    start, trained = codec.decoder.state_dict(), vocoder.decoder.state_dict()
    assert start.keys() == trained.keys()
    # one update (Adam, lr 1e-3) moves each weight by about the learning rate, nothing like a fresh start
    assert max(float((start[k] - trained[k]).abs().max()) for k in start) < 0.01
    causal = Codec(CodecConfig(**{**vars(cfg), "causal": True}))
    causal.save_pretrained(tmp / "causal_codec.pt")
    capsys.readouterr()
    assert _train(*args[:-1], tmp / "exp_causal", "--init-decoder", str(tmp / "causal_codec.pt")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "causal codec's decoder pads on the left" in err


def test_crops_decode_each_file_once_with_the_audio_cache(monkeypatch, tmp_path):
    from vqaudio.train import run_vocoder

    calls = []
    real = run_vocoder.load_audio

    def counting(*args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(run_vocoder, "load_audio", counting)
    files = []
    for i in range(2):
        files.append(tmp_path / f"s-{i}.wav")
        sf.write(files[-1], np.random.default_rng(i).standard_normal(3200).astype(np.float32) * 0.1, 16000)
    from vqaudio.data import read_data_dir

    data = read_data_dir(_data_dir(tmp_path / "data", files))
    examples = [run_vocoder.Example(u.utt_id, torch.zeros(1, 10, dtype=torch.long), u, "s") for u in data]
    for cache_mb, expected in ((1.0, 2), (0.0, 12)):
        calls.clear()
        crops = run_vocoder.VocoderCrops(examples, 16000, 320, 4, "none", cache_mb=cache_mb)
        items = [crops[i % 2] for i in range(12)]
        assert len(calls) == expected
        assert all(item["wav"].shape == (1, 4 * 320) for item in items)
    crops = run_vocoder.VocoderCrops(examples, 16000, 320, 4, "none", cache_mb=3200 * 4 * 1.5 / 2**20)
    for i in (0, 1, 0):
        crops[i]
    assert list(crops.cache) == ["s-0"]  # room for one: the least recently used went out
