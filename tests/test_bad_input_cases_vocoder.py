"""Bad input and reruns of the unit vocoder, convert, the scorers, SSL units and train-ssl: each case of the
bad-input list of 2026-12-06 (and the cases of the same classes found over the rest of the CLI and API) as a
one-line error or the right output, with nothing lost or overwritten."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.models.vocoder import Vocoder, VocoderConfig

from .speech import SR, synth_utterance
from .test_trust import one_error_line
from .test_units import small_codec
from .test_vocoder import SMALL, _config, _steps, _train, kmeans_model

ROOT = pathlib.Path(__file__).resolve().parents[1]


def md5s(folder: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.wav"))}


def write_data(folder: pathlib.Path, clips: dict[str, np.ndarray], text: dict[str, str] | None = None) -> pathlib.Path:
    """A Kaldi data dir of ``clips`` (utterance id -> samples at 16 kHz); the speaker is the id's prefix."""
    (folder / "audio").mkdir(parents=True)
    for utt, wav in clips.items():
        sf.write(folder / "audio" / f"{utt}.wav", wav, SR)
    (folder / "wav.scp").write_text("".join(f"{u} {folder / 'audio' / f'{u}.wav'}\n" for u in sorted(clips)))
    (folder / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(clips)))
    if text is not None:
        (folder / "text").write_text("".join(f"{u} {t}\n" for u, t in sorted(text.items())))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data dir of three speakers (C with one utterance), two untrained k-means unit models and their units,
    and a reference-voice vocoder of the first (random weights: real parts, cheap)."""
    from vqaudio.units.extract import extract_units

    tmp = tmp_path_factory.mktemp("voc_cases")
    clips = {f"{s}-{i}": synth_utterance(2.0, seed=10 * n + i) for n, s in enumerate("AB") for i in (1, 2)}
    clips["C-1"] = synth_utterance(2.0, seed=99)
    data = write_data(tmp / "data", clips)
    km, km2 = kmeans_model(tmp / "km.pt"), kmeans_model(tmp / "km2.pt")
    extract_units(km, data, tmp / "units", progress=False)
    extract_units(km2, data, tmp / "units2", progress=False)
    cfg = VocoderConfig(**{**SMALL, "speaker": "reference", "reference_seconds": 1.5})
    voc = Vocoder(cfg, unit_model=km).save_pretrained(tmp / "voc")
    return dict(tmp=tmp, data=data, km=km, km2=km2, units=tmp / "units", units2=tmp / "units2", voc=voc)


def _pairs(path: pathlib.Path, pairs: list[tuple[str, str]]) -> pathlib.Path:
    path.write_text("".join(f"{u} {r}\n" for u, r in pairs))
    return path


def _copy_data(world, name: str) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(world["data"], world["tmp"] / name))


# --- data loss: an output never overwrites an input -------------------------------------------------------------


def test_convert_into_its_own_data_dir_is_refused(world, capsys):  # P2
    d = _copy_data(world, "d2")
    before = (d / "wav.scp").read_text()
    pairs = _pairs(world["tmp"] / "p_d2", [("A-1", "B-1")])
    argv = ["convert", "--vocoder", str(world["voc"]), "--data", str(d), "--pairs", str(pairs), "-o", str(d)]
    assert main(argv) == 2
    assert "is (or is inside) the input --data" in one_error_line(capsys)
    assert main([*argv, "-f"]) == 2  # never, not even forced
    capsys.readouterr()
    assert (d / "wav.scp").read_text() == before and not (d / "A-1.wav").exists()


def test_resynth_into_its_own_data_dir_is_refused(world, capsys):  # S3
    d = _copy_data(world, "d3")
    before = (d / "wav.scp").read_text()
    argv = ["resynth", "--vocoder", str(world["voc"]), "--units", str(world["units"]), "--own-voice"]
    assert main([*argv, "--data", str(d), "--out", str(d)]) == 2
    assert "is (or is inside) the input --data" in one_error_line(capsys)
    assert (d / "wav.scp").read_text() == before
    other = _copy_data(world, "d3b")  # another data dir as --out: its wav.scp is not this command's
    assert main([*argv, "--data", str(world["data"]), "--out", str(other)]) == 2
    assert "did not write it" in one_error_line(capsys)
    assert (other / "wav.scp").read_text() == (world["data"] / "wav.scp").read_text()


def test_the_example_script_never_overwrites_its_source_and_says_errors_in_one_line(world, tmp_path):  # X1, X2
    source = tmp_path / "src.wav"
    sf.write(source, synth_utterance(2.0, seed=5), SR)
    before = source.read_bytes()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

    def run(*args):
        argv = [sys.executable, str(ROOT / "egs" / "voice_conversion.py"), "--vocoder", str(world["voc"]), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)

    ref = world["data"] / "audio" / "B-1.wav"
    done = run("--source", str(source), "--reference", str(ref), "--out", str(source))
    assert done.returncode == 2 and "is the --source" in done.stderr and "Traceback" not in done.stderr
    assert source.read_bytes() == before
    short = tmp_path / "short.wav"
    sf.write(short, synth_utterance(0.5, seed=6), SR)
    done = run("--source", str(source), "--reference", str(short), "--out", str(tmp_path / "o.wav"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "0.50 s of audio" in done.stderr
    ok = run("--source", str(source), "--reference", str(ref), "--out", str(tmp_path / "o.wav"))
    assert ok.returncode == 0, ok.stderr
    again = run("--source", str(source), "--reference", str(ref), "--out", str(tmp_path / "o.wav"))
    assert again.returncode == 2 and "pass -f" in again.stderr


def test_train_ssl_refuses_an_exp_dir_that_holds_another_model(tmp_path, capsys):  # K8
    transformers = pytest.importorskip("transformers")
    from .test_ssl import SMALL as SSL_SMALL

    hub = tmp_path / "hub"
    transformers.HubertModel(transformers.HubertConfig(**SSL_SMALL)).save_pretrained(hub)
    before = (hub / "model.safetensors").read_bytes()
    data = write_data(tmp_path / "data", {"A-1": synth_utterance(1.0, seed=1), "A-2": synth_utterance(1.0, seed=2)})
    km = kmeans_model(tmp_path / "km.pt")
    argv = ["train-ssl", "--targets", str(km), "--train-data", str(data), "--valid-data", str(data)]
    for extra in ([], ["--resume"]):
        assert main([*argv, "--exp-dir", str(hub), *extra]) == 2
        assert "that train-ssl did not write" in one_error_line(capsys)
    assert (hub / "model.safetensors").read_bytes() == before and not (hub / "checkpoints").exists()


# --- silent wrong output: a rerun resumes what was asked or refuses -------------------------------------------


def test_a_convert_rerun_with_other_pairs_is_refused_and_f_redoes_it(world, capsys):  # P1
    p1 = _pairs(world["tmp"] / "p1", [("A-1", "B-1"), ("B-2", "A-2")])
    p2 = _pairs(world["tmp"] / "p2", [("A-1", "C-1"), ("B-2", "C-1")])
    out = world["tmp"] / "cv"
    argv = ["convert", "--vocoder", str(world["voc"]), "--data", str(world["data"]), "-o", str(out), "--pairs"]
    assert main([*argv, str(p1)]) == 0
    first = md5s(out)
    assert main([*argv, str(p1)]) == 0 and md5s(out) == first  # the same request resumes
    capsys.readouterr()
    assert main([*argv, str(p2)]) == 2
    assert "differs in pairs" in one_error_line(capsys)
    assert md5s(out) == first and "A-1 B\n" in (out / "utt2target").read_text()
    assert main([*argv, str(p2), "-f"]) == 0
    assert md5s(out)["A-1.wav"] != first["A-1.wav"]
    assert (out / "utt2target").read_text() == "A-1 C\nB-2 C\n"


def test_a_resynth_rerun_with_another_voice_is_refused_and_f_redoes_it(world, capsys):  # S1, S2
    out = world["tmp"] / "rs"
    argv = ["resynth", "--vocoder", str(world["voc"]), "--units", str(world["units"]), "--out", str(out)]
    audio = world["data"] / "audio"
    assert main([*argv, "--reference", str(audio / "A-1.wav")]) == 0
    first = md5s(out)
    stamp = (out / "A-2.wav").stat().st_mtime_ns
    assert main([*argv, "--reference", str(audio / "A-1.wav")]) == 0
    assert (out / "A-2.wav").stat().st_mtime_ns == stamp  # resumed, not redone
    capsys.readouterr()
    assert main([*argv, "--reference", str(audio / "B-1.wav")]) == 2
    assert "differs in voice" in one_error_line(capsys)
    assert main([*argv, "--own-voice", "--data", str(world["data"])]) == 2
    assert "differs in data, voice" in one_error_line(capsys)
    assert md5s(out) == first and not (out / "utt2reference").exists()
    assert main([*argv, "--own-voice", "--data", str(world["data"]), "-f"]) == 0
    assert md5s(out)["B-1.wav"] != first["B-1.wav"] and (out / "utt2reference").is_file()
    assert main([*argv, "--reference", str(audio / "B-1.wav"), "-f"]) == 0
    assert not (out / "utt2reference").exists()  # the own-voice run's record does not describe this audio


def test_a_vocoder_whose_unit_model_was_swapped_is_refused(world, capsys):  # S7, P10
    from vqaudio.units.model import load_unit_model

    swapped = pathlib.Path(shutil.copytree(world["voc"], world["tmp"] / "voc_swap"))
    shutil.rmtree(swapped / "unit_model")
    load_unit_model(world["km2"]).save_pretrained(swapped / "unit_model")
    with pytest.raises(UserError, match="holds unit model .* not the one the vocoder was trained on"):
        Vocoder.from_pretrained(swapped)
    out = world["tmp"] / "x2"
    assert main(["resynth", "--vocoder", str(swapped), "--units", str(world["units2"]), "--out", str(out)]) == 2
    assert "not the one the vocoder was trained on" in one_error_line(capsys) and not out.exists()
    pairs = _pairs(world["tmp"] / "p_swap", [("A-1", "B-1")])
    argv = ["convert", "--vocoder", str(swapped), "--data", str(world["data"]), "--pairs", str(pairs)]
    assert main([*argv, "-o", str(out)]) == 2  # one line, no per-utterance failures and empty lists
    assert "not the one the vocoder was trained on" in one_error_line(capsys) and not out.exists()


def test_own_voice_falls_back_past_a_short_reference_and_names_what_failed(world, tmp_path, capsys):  # S10
    from vqaudio.units.extract import extract_units

    long = synth_utterance(2.0, seed=1)
    clips = {"A-1": long, "A-2": long[: SR // 2], "B-1": long, "B-2": long[: int(1.5 * SR)], "F-1": long[:1]}
    data = write_data(tmp_path / "ov", clips)
    extract_units(world["km"], data, tmp_path / "units", progress=False)
    out = tmp_path / "ovr"
    argv = ["resynth", "--vocoder", str(world["voc"]), "--units", str(tmp_path / "units"), "--own-voice"]
    assert main([*argv, "--data", str(data), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    refs = dict(line.split() for line in (out / "utt2reference").read_text().splitlines())
    assert refs == {"A-1": "A-1", "A-2": "A-1", "B-1": "B-2", "B-2": "B-1"}  # A-2 (0.5 s) cannot serve
    assert (out / "failed.txt").read_text() == "F-1\n"
    assert sorted(md5s(out)) == ["A-1.wav", "A-2.wav", "B-1.wav", "B-2.wav"]


def test_a_clean_rerun_removes_the_failed_list_of_an_earlier_run(world, tmp_path):  # P7
    clips = {u: sf.read(world["data"] / "audio" / f"{u}.wav", dtype="float32")[0] for u in ("A-1", "A-2", "B-1", "B-2")}
    d = write_data(tmp_path / "d", clips)
    good = (d / "audio" / "B-2.wav").read_bytes()
    (d / "audio" / "B-2.wav").write_text("not audio")
    pairs = _pairs(tmp_path / "pairs", [("A-1", "B-1"), ("B-2", "A-2")])
    argv = ["convert", "--vocoder", str(world["voc"]), "--data", str(d), "--pairs", str(pairs)]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 1
    assert (tmp_path / "out" / "failed.txt").read_text() == "B-2\n"
    (d / "audio" / "B-2.wav").write_bytes(good)
    assert main([*argv, "-o", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "failed.txt").exists()
    assert sorted(md5s(tmp_path / "out")) == ["A-1.wav", "B-2.wav"]


# --- training: a resume checks its inputs before the first update ----------------------------------------------


def test_train_vocoder_resume_checks_the_unit_model_skips_short_validation_and_stops_when_done(world, capsys):
    from vqaudio.checkpoint import model_checksum
    from vqaudio.units.extract import extract_units

    tmp = world["tmp"]
    valid = write_data(tmp / "vt", {"A-9": synth_utterance(2.0, seed=3), "F-1": np.array([0.1], np.float32)})
    extract_units(world["km"], valid, tmp / "units_vt", progress=False)
    conf = _config(tmp, "voc_cases.yaml", speaker="none")
    exp = tmp / "exp"
    extra = ["--valid-units", str(tmp / "units_vt"), "--valid-data", str(valid), "--max-steps", "2"]
    assert _train(conf, world["units"], world["data"], world["km"], exp, *extra) == 0  # T6: F-1 has 1 sample
    assert "F-1" in (exp / "log" / "train.log").read_text()
    assert _steps(exp) == 2
    last = (exp / "checkpoints" / "last.ckpt").read_bytes()
    model = model_checksum(exp / "model.pt")
    capsys.readouterr()
    other = [world["units2"], world["data"], world["km2"], exp, *extra, "--resume"]  # T3
    assert _train(conf, *other) == 2
    assert "is another unit model" in one_error_line(capsys)
    assert (exp / "checkpoints" / "last.ckpt").read_bytes() == last and model_checksum(exp / "model.pt") == model
    assert _train(conf, world["units"], world["data"], world["km"], exp, *extra, "--resume") == 0  # T4
    assert _steps(exp) == 2 and model_checksum(exp / "model.pt") == model


def test_the_progress_bar_shows_no_epoch_total_of_minus_two():  # item 4
    from vqaudio.train.experiment import progress_bar

    bar = progress_bar()
    describe = getattr(bar, "_get_train_description", None)
    if describe is None:
        pytest.skip("tqdm's bar shows no epoch total")
    assert describe(1).strip() == "Epoch 1"


def test_a_resume_config_difference_names_the_config_in_a_short_line(tmp_path):  # K7
    from vqaudio.train.config import TrainSSLConfig
    from vqaudio.train.experiment import prepare_experiment

    prepare_experiment(TrainSSLConfig, TrainSSLConfig(), tmp_path / "exp", False, None, "ssl")
    changed = TrainSSLConfig()
    changed.data.batch_size += 1
    with pytest.raises(UserError) as err:
        prepare_experiment(TrainSSLConfig, changed, tmp_path / "exp", True, None, "ssl")
    assert "the given config differs" in str(err.value) and "data.batch_size" in str(err.value)
    assert len(str(err.value)) < 300


def test_empty_teacher_layers_are_refused_not_layer_6(tmp_path):  # K10
    transformers = pytest.importorskip("transformers")
    from vqaudio.train.content import FeatureTeacher

    from .test_ssl import SMALL as SSL_SMALL

    transformers.HubertModel(transformers.HubertConfig(**SSL_SMALL)).save_pretrained(tmp_path / "hub")
    with pytest.raises(UserError, match=r"got \[\]"):
        FeatureTeacher(str(tmp_path / "hub"), 16000, 320, layers=[])


# --- the Python API takes what the CLI takes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def api(world):
    return Vocoder.from_pretrained(world["voc"])


def test_non_finite_or_empty_audio_is_refused_naming_the_argument(api):  # A1
    wav = synth_utterance(2.0, seed=1)
    bad = wav.copy()
    bad[100:110] = np.nan
    with pytest.raises(ValueError, match=r"reference: 10 NaN/Inf"):
        api.convert(wav, bad)
    with pytest.raises(ValueError, match=r"reference: 10 NaN/Inf"):
        api.voice(bad)
    with pytest.raises(ValueError, match=r"wav: 10 NaN/Inf"):
        api.convert(bad, wav)
    with pytest.raises(ValueError, match="wav: no samples"):
        api.convert(np.zeros(0, np.float32), wav)
    with pytest.raises(ValueError, match="expected real audio samples"):
        api.convert(wav > 0, wav)
    with pytest.raises(ValueError, match=r"shape \(3, 40, 200\)"):
        api.convert(np.zeros((3, 40, 200), np.float32), wav)


def test_int16_stereo_and_other_rates_are_handled_as_documented(api):
    wav = synth_utterance(2.0, seed=1)
    voice = api.voice(synth_utterance(2.0, seed=2))
    expected = api.convert(wav, voice)
    ints = np.round(wav * 32767).astype(np.int16)
    assert torch.allclose(api.convert(ints, voice), api.convert(ints.astype(np.float32) / 32768, voice))
    assert torch.allclose(api.convert(np.stack([wav, wav], axis=1), voice), expected)  # (T, C), as sf.read
    assert torch.allclose(api.convert(torch.from_numpy(wav)[None, None], voice), expected)
    assert api.convert(wav[::2].copy(), voice, sample_rate=8000).shape == (2 * (wav.shape[0] // 2),)
    assert torch.isfinite(expected).all()


def test_units_f0_and_length_of_resynthesize_are_checked(api):
    units = torch.zeros(5, dtype=torch.long)
    ref = synth_utterance(2.0, seed=2)
    with pytest.raises(ValueError, match="units: expected integers"):
        api.resynthesize(units.float() + 0.5, reference=ref)
    with pytest.raises(ValueError, match="length: expected a number of samples >= 1"):
        api.resynthesize(units, reference=ref, length=-5)
    with pytest.raises(ValueError, match="at least one frame"):
        api.resynthesize(torch.zeros(0, dtype=torch.long), reference=ref)
    assert api.resynthesize(units, reference=ref, length=100).shape == (100,)


@pytest.mark.parametrize("kind", ["dc", "click"])
def test_a_dc_or_click_reference_is_no_voice(api, kind):  # C9
    ref = np.full(2 * SR, 0.3, np.float32) if kind == "dc" else np.zeros(2 * SR, np.float32)
    if kind == "click":
        ref[SR] = 0.9
    with pytest.raises(UserError, match="reference: silent"):
        api.voice(ref)


# --- tracebacks: an unwritable output is one line ---------------------------------------------------------------


@pytest.fixture
def unwritable(tmp_path):
    """A folder that exists and takes no new file: /proc as root (whom permissions do not stop), else a
    read-only folder."""
    if os.geteuid() == 0:
        yield pathlib.Path("/proc")
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    yield folder
    folder.chmod(0o700)


def test_an_unwritable_output_folder_is_one_line(world, unwritable, capsys):  # S12, E5
    audio = world["data"] / "audio"
    conv = ["convert", "--vocoder", str(world["voc"]), "--source", str(audio / "A-1.wav")]
    assert main([*conv, "--reference", str(audio / "B-1.wav"), "-o", str(unwritable / "o.wav")]) == 2
    assert "cannot write" in one_error_line(capsys)
    argv = ["resynth", "--vocoder", str(world["voc"]), "--units", str(world["units"]), "--out", str(unwritable)]
    assert main([*argv, "--reference", str(audio / "A-1.wav")]) == 2
    assert "cannot write" in one_error_line(capsys)
    pairs = _pairs(world["tmp"] / "p_ro", [("A-1", "B-1")])
    cv = ["convert", "--vocoder", str(world["voc"]), "--data", str(world["data"]), "--pairs", str(pairs)]
    assert main([*cv, "-o", str(unwritable)]) == 2
    assert "cannot write" in one_error_line(capsys)
    ev = ["evaluate", "--ref", str(world["data"]), "--hyp", str(world["data"]), "--out", str(unwritable)]
    assert main(ev) == 2
    assert "cannot write" in one_error_line(capsys)


def test_a_failed_single_conversion_names_its_path_once(world, tmp_path, capsys):  # C2
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), SR)
    ref = world["data"] / "audio" / "B-1.wav"
    argv = ["convert", "--vocoder", str(world["voc"]), "--source", str(empty), "--reference", str(ref)]
    assert main([*argv, "-o", str(tmp_path / "o.wav")]) == 2
    assert one_error_line(capsys).count(str(empty)) == 1


def test_a_rerun_with_the_output_inside_the_source_folder_converts_no_output(world, tmp_path, capsys):  # C11
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(world["data"] / "audio" / "A-1.wav", src / "a.wav")
    ref = world["data"] / "audio" / "B-1.wav"
    argv = ["convert", "--vocoder", str(world["voc"]), "--source", str(src), "--reference", str(ref)]
    for _ in range(2):
        assert main([*argv, "-o", str(src / "out")]) == 0
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*.wav")) == ["a.wav", "out/a.wav"]


# --- honest scores ---------------------------------------------------------------------------------------------


def test_placeholder_transcripts_are_left_out_of_the_error_rates_and_counted(tmp_path):  # E1, G3
    pytest.importorskip("pocketsphinx")
    clips = {"A-1": synth_utterance(1.0, seed=1), "A-2": synth_utterance(1.0, seed=2), "A-3": synth_utterance(1.0, 3)}
    data = write_data(tmp_path / "data", clips, text={"A-1": "HELLO WORLD", "A-2": "UNKNOWN", "A-3": " "})
    out = tmp_path / "ev"
    assert main(["evaluate", "--ref", str(data), "--hyp", str(data), "--asr", "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["asr_utterances"] == 1 and m["asr_no_transcript"] == 2 and m["asr_reference_words"] == 2
    assert m["utterances"]["wer"] == 1 and m["utterances"]["stoi"] == 3
    rows = {r["utt"]: r for r in csv.DictReader((out / "per_utterance.csv").open())}
    assert math.isnan(float(rows["A-2"]["wer_reference"])) and not math.isnan(float(rows["A-1"]["wer_reference"]))
    results = (out / "RESULTS.md").read_text()
    assert "| metric | value | utterances |" in results and "placeholder such as UNKNOWN): 2" in results
    assert any(
        line.startswith("| word error rate, pocketsphinx") and line.endswith("| 1 |") for line in results.split("\n")
    )


def test_a_conversion_scored_only_against_its_copied_reference_is_left_out(world, tmp_path):  # E2, G3
    pytest.importorskip("resemblyzer")
    hyp = tmp_path / "cv3"  # what convert --data writes for these pairs, with the sources standing for conversions
    hyp.mkdir()
    pairs = {"A-1": "C-1", "A-2": "B-1"}  # C's only utterance is the reference the voice was copied from
    (hyp / "wav.scp").write_text("".join(f"{u} {world['data'] / 'audio' / f'{u}.wav'}\n" for u in pairs))
    (hyp / "utt2target").write_text("".join(f"{u} {r.split('-')[0]}\n" for u, r in pairs.items()))
    (hyp / "utt2reference").write_text("".join(f"{u} {r}\n" for u, r in pairs.items()))
    ev = tmp_path / "ev3"
    assert main(["evaluate", "--ref", str(world["data"]), "--hyp", str(hyp), "--speaker-sim", "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    rows = {r["utt"]: r for r in csv.DictReader((ev / "per_utterance.csv").open())}
    assert math.isnan(float(rows["A-1"]["speaker_similarity"]))
    assert not math.isnan(float(rows["A-2"]["speaker_similarity"]))
    assert m["speaker_similarity_self_reference"] == 1 and m["utterances"]["speaker_similarity"] == 1
    assert m["conversions"] == 1 and m["utterances"]["conversion_margin"] == 1
    assert m["conversions_unscored"] == 1  # the pair whose target has only the copied reference
    assert "than the one compared or copied: 1" in (ev / "RESULTS.md").read_text()


# --- the same classes elsewhere in the CLI ---------------------------------------------------------------------


def test_a_codec_resynth_rerun_with_another_model_is_refused(tmp_path, capsys):  # class of S1: resynth --model
    from .test_units import make_data_dir

    model, other = small_codec().save_pretrained(tmp_path / "m.pt"), tmp_path / "o.pt"
    codec = small_codec()
    with torch.no_grad():
        next(codec.decoder.parameters()).add_(1.0)
    codec.save_pretrained(other)
    data = make_data_dir(tmp_path, n=2)
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "u")]) == 0
    argv = ["resynth", "--units", str(tmp_path / "u"), "--out", str(tmp_path / "r")]
    assert main([*argv, "--model", str(model)]) == 0
    first = md5s(tmp_path / "r")
    capsys.readouterr()
    assert main([*argv, "--model", str(other), "--any-model"]) == 2
    assert "differs in model" in one_error_line(capsys) and md5s(tmp_path / "r") == first
    assert main([*argv, "--model", str(other), "--any-model", "-f"]) == 0 and md5s(tmp_path / "r") != first
    assert main([*argv[:-1], str(tmp_path / "u"), "--model", str(model)]) == 2  # --out is the units dir
    assert "is (or is inside) the input --units" in one_error_line(capsys)


def test_a_convert_dir_rerun_with_another_reference_is_refused(world, tmp_path, capsys):  # class of S1: --source DIR
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(world["data"] / "audio" / "A-1.wav", src / "a.wav")
    audio = world["data"] / "audio"
    argv = ["convert", "--vocoder", str(world["voc"]), "--source", str(src), "-o", str(tmp_path / "out")]
    assert main([*argv, "--reference", str(audio / "B-1.wav")]) == 0
    first = md5s(tmp_path / "out")
    capsys.readouterr()
    assert main([*argv, "--reference", str(audio / "C-1.wav")]) == 2
    assert "differs in voice" in one_error_line(capsys) and md5s(tmp_path / "out") == first
    assert main([*argv, "--reference", str(audio / "C-1.wav"), "-f"]) == 0 and md5s(tmp_path / "out") != first


def test_convert_never_writes_over_its_reference(world, tmp_path, capsys):  # class of X1: the CLI
    ref = tmp_path / "ref.wav"
    shutil.copy(world["data"] / "audio" / "B-1.wav", ref)
    before = ref.read_bytes()
    argv = ["convert", "--vocoder", str(world["voc"]), "--source", str(world["data"] / "audio" / "A-1.wav")]
    assert main([*argv, "--reference", str(ref), "-o", str(ref), "-f"]) == 2
    assert "is the reference" in one_error_line(capsys) and ref.read_bytes() == before


def test_an_ssl_unit_model_refuses_a_changed_normalisation(tmp_path):  # class: what a model records is checked
    transformers = pytest.importorskip("transformers")
    from vqaudio.units.kmeans import KMeansConfig, KMeansUnitModel, train_kmeans

    from .test_ssl import SMALL as SSL_SMALL

    hub = tmp_path / "hub"
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**SSL_SMALL)).save_pretrained(hub)
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=False, sampling_rate=16000)
    extractor.save_pretrained(hub)
    data = write_data(tmp_path / "data", {"A-1": synth_utterance(1.0, seed=1), "A-2": synth_utterance(1.0, seed=2)})
    cfg = KMeansConfig(feature="ssl", k=4, ssl_model=str(hub), ssl_layer=1, standardize=False)
    train_kmeans(data, tmp_path / "km.pt", cfg, iters=2, progress=False)
    KMeansUnitModel.from_pretrained(tmp_path / "km.pt")
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000).save_pretrained(hub)
    with pytest.raises(UserError, match="now normalises its waveforms"):
        KMeansUnitModel.from_pretrained(tmp_path / "km.pt")
