"""Bad configs, options and recipe stages: one clear line naming what is wrong, before anything is written."""

from __future__ import annotations

import pathlib
import subprocess

import pytest
import yaml

from vqaudio.cli.main import main
from vqaudio.config import from_dict
from vqaudio.errors import UserError
from vqaudio.train.config import TrainCodecConfig, TrainPriorConfig

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_floats_in_any_yaml_form_are_numbers():
    cfg = from_dict(TrainCodecConfig, yaml.safe_load("optim: {lr: 1e-3, disc_lr: 2E-4}\ndata: {segment_seconds: 1}"))
    assert cfg.optim.lr == 0.001 and cfg.optim.disc_lr == 0.0002 and cfg.data.segment_seconds == 1.0
    assert isinstance(cfg.data.segment_seconds, float)


@pytest.mark.parametrize(
    "cls, data, message",
    [
        (TrainCodecConfig, {"data": {"batch_size": -4}}, r"data.batch_size: -4 is out of range; it must be >=1"),
        (TrainCodecConfig, {"data": {"batch_size": 0}}, r"data.batch_size: 0 is out of range"),
        (TrainCodecConfig, {"data": {"segment_seconds": "abc"}}, r"data.segment_seconds: expected a number, got 'abc'"),
        (TrainCodecConfig, {"optim": {"lr": "fast"}}, r"optim.lr: expected a number"),
        (TrainCodecConfig, {"optim": {"lr": 0}}, r"optim.lr: 0.0 is out of range; it must be >0"),
        (TrainCodecConfig, {"optim": {"lr_decay": 1.5}}, r"optim.lr_decay: 1.5 is out of range; it must be \(0, 1\]"),
        (TrainCodecConfig, {"optim": {"betas": [0.8, 1.0]}}, r"optim.betas: \[0.8, 1.0\] is out of range"),
        (TrainCodecConfig, {"trainer": {"max_steps": 0}}, r"trainer.max_steps: 0 is out of range"),
        (TrainCodecConfig, {"loss": {"mel": -1}}, r"loss.mel: -1.0 is out of range; it must be >=0"),
        (TrainCodecConfig, {"content": {"max_seconds": 0}}, r"content.max_seconds: 0.0 is out of range"),
        (TrainCodecConfig, {"data": {"segment_seconds": ".nan"}}, r"expected a number"),
        (TrainPriorConfig, {"data": {"segment_frames": 0}}, r"data.segment_frames: 0 is out of range"),
        (TrainPriorConfig, {"data": {"speaker_dropout": 1.0}}, r"data.speaker_dropout: 1.0 is out of range"),
        (TrainPriorConfig, {"optim": {"lr": -1e-3}}, r"optim.lr: -0.001 is out of range"),
    ],
)
def test_config_values_out_of_range_name_the_key_and_the_range(cls, data, message):
    with pytest.raises(UserError, match=message):
        from_dict(cls, yaml.safe_load(yaml.safe_dump(data)))


def test_bad_config_fails_before_the_experiment_dir_exists(tmp_path, capsys):
    conf = tmp_path / "bad.yaml"
    conf.write_text("data: {batch_size: -4}\n")
    exp = tmp_path / "exp"
    args = ["train-codec", "--config", str(conf), "--train-data", str(tmp_path), "--valid-data", str(tmp_path)]
    assert main([*args, "--exp-dir", str(exp)]) == 2
    assert "data.batch_size" in capsys.readouterr().err and not exp.exists()
    assert (
        main(
            [
                *args[:2],
                str(ROOT / "recipes/librispeech/conf/codec_tiny.yaml"),
                *args[3:],
                "--exp-dir",
                str(exp),
                "--max-steps",
                "-1",
            ]
        )
        == 2
    )
    assert "trainer.max_steps: -1 is out of range" in capsys.readouterr().err and not exp.exists()


def test_resume_with_a_changed_config_is_refused_naming_the_keys(tmp_path):
    from vqaudio.train.experiment import prepare_experiment

    first = tmp_path / "a.yaml"
    first.write_text("optim: {lr: 1e-3}\ntrainer: {max_steps: 10}\n")
    exp = tmp_path / "exp"
    prepare_experiment(TrainPriorConfig, first, exp, False, {"max_steps": 5}, "prior")
    (exp / "checkpoints").mkdir()
    (exp / "checkpoints" / "last.ckpt").write_bytes(b"")
    # the same config and the same override: fine; a new --max-steps is an explicit override: fine (and saved)
    assert prepare_experiment(TrainPriorConfig, first, exp, True, {"max_steps": 5}, "prior").trainer.max_steps == 5
    assert prepare_experiment(TrainPriorConfig, first, exp, True, {"max_steps": 50}, "prior").trainer.max_steps == 50
    changed = tmp_path / "b.yaml"
    changed.write_text("optim: {lr: 2e-3}\ndata: {batch_size: 4}\ntrainer: {max_steps: 10}\n")
    with pytest.raises(
        UserError, match=r"differs from .* in data.batch_size, optim.lr, trainer.max_steps;.*--allow-config-change"
    ):
        prepare_experiment(TrainPriorConfig, changed, exp, True, None, "prior")
    cfg = prepare_experiment(TrainPriorConfig, changed, exp, True, None, "prior", allow_config_change=True)
    assert cfg.optim.lr == 0.002 and cfg.data.batch_size == 4
    assert yaml.safe_load((exp / "config.yaml").read_text())["optim"]["lr"] == 0.002
    assert prepare_experiment(TrainPriorConfig, None, exp, True, None, "prior").optim.lr == 0.002


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "9"], "both must lie in 0..{last}"),
        (["--stage", "abc"], "must be integers in 0..{last}, got 'abc'"),
        (["--stop_stage", "-1"], "must be integers in 0..{last}, got '-1'"),
        (["--stage", "3", "--stop_stage", "1"], "stage <= stop_stage"),
    ],
)
@pytest.mark.parametrize("recipe", ["librispeech", "ljspeech", "vctk"])
def test_recipes_reject_bad_stages(recipe, args, message):
    message = message.format(last=7 if recipe == "librispeech" else 6)  # stage 7: LibriSpeech's unit vocoder
    res = subprocess.run(
        ["bash", "run.sh", *args], cwd=ROOT / "recipes" / recipe, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 1 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr


@pytest.mark.parametrize(
    "extra, message",
    [(["--threads", "-1"], "--threads must be >= 1"), (["--device", "cuda:7"], "CUDA device not available")],
)
def test_extract_options_out_of_range_are_one_line(tmp_path, capsys, extra, message):
    args = ["extract-units", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_speakers_come_from_utt2spk_else_the_id_prefix(tmp_path):
    from vqaudio.data.kaldi import speakers_of

    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("a-1 alice\n")
    assert speakers_of(["a-1", "b-2"], utt2spk) == {"a-1": "alice", "b-2": "b"}
    assert speakers_of(["a-1", "1272-128-0000"]) == {"a-1": "a", "1272-128-0000": "1272"}
    with pytest.raises(UserError, match=r"utt2spk: no speaker for 1 utterance\(s\), e.g. 'b-2'"):
        speakers_of(["a-1", "b-2"], utt2spk, strict=True)
