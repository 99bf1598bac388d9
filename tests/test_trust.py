"""Trust under bad input: extraction that checks what it resumes, pipes that cannot stop or hang a job,
ids that cannot escape the output dir, training that survives unreadable files, one-line user errors."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pathlib
import re
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.data import CropDataset
from vqaudio.data.audio import AudioError, load_audio, run_pipe
from vqaudio.data.kaldi import read_data_dir, validate_data_dir
from vqaudio.errors import UserError
from vqaudio.units import read_units

from .speech import SR, synth_utterance
from .test_units import make_data_dir, small_codec

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def model(tmp_path) -> pathlib.Path:
    return small_codec().save_pretrained(tmp_path / "model.pt")


def extract(model, data, out, *extra) -> int:
    return main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(out), *extra])


def one_error_line(capsys) -> str:
    """The command's one error line (progress bars aside), asserting there is exactly one and no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- extraction state -------------------------------------------------------------------------------------


def test_a_rerun_with_another_model_is_refused(tmp_path, model, capsys):
    data, out = make_data_dir(tmp_path, n=4), tmp_path / "units"
    assert extract(model, data, out) == 0
    units = (out / "units").read_bytes()
    capsys.readouterr()
    other = small_codec()
    with torch.no_grad():
        next(other.decoder.parameters()).add_(1.0)
    other_path = other.save_pretrained(tmp_path / "other.pt")
    assert extract(other_path, data, out) == 2
    err = one_error_line(capsys)
    assert "different model" in err and "start afresh" in err
    assert (out / "units").read_bytes() == units  # nothing relabelled


def test_a_rerun_with_more_utterances_is_refused_not_merged(tmp_path, model, capsys):
    data, out = make_data_dir(tmp_path, n=6), tmp_path / "units"
    for job in ("1", "2"):
        assert extract(model, data, out, "--nj", "2", "--job", job) == 0
    path = tmp_path / "extra.flac"
    sf.write(path, synth_utterance(0.5, seed=99), SR)
    with open(data / "wav.scp", "a") as f:
        f.write(f"zz-new {path}\n")
    capsys.readouterr()
    assert extract(model, data, out, "--nj", "2", "--job", "1") == 2
    assert "data dir (6 utterances then, 7 now)" in one_error_line(capsys)


def test_a_rerun_with_other_levels_is_refused(tmp_path, model, capsys):
    data, out = make_data_dir(tmp_path, n=3), tmp_path / "units"
    assert extract(model, data, out, "--n-q", "1") == 0
    capsys.readouterr()
    assert extract(model, data, out) == 2
    assert "--n-q (1 then, 2 now)" in one_error_line(capsys)


def test_the_merge_refuses_when_utterances_are_missing(tmp_path, model, capsys):
    data, out = make_data_dir(tmp_path, n=6), tmp_path / "units"
    assert extract(model, data, out, "--nj", "2", "--job", "2") == 0
    job2 = out / ".work" / "job2of2.jsonl"
    lines = job2.read_text().splitlines(keepends=True)
    lost = json.loads(lines[0])["utt"]
    job2.write_text("".join(lines[1:]))  # job 2's output lost a line after it finished
    capsys.readouterr()
    assert extract(model, data, out, "--nj", "2", "--job", "1") == 2
    err = one_error_line(capsys)
    assert "1 utterance(s) neither extracted nor failed" in err and lost in err
    assert not (out / "units").exists()


def test_a_second_run_of_the_same_job_is_refused(tmp_path, model, capsys):
    data, out = make_data_dir(tmp_path, n=2), tmp_path / "units"
    (out / ".work").mkdir(parents=True)
    with open(out / ".work" / "job1of1.lock", "w") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert extract(model, data, out) == 2
        assert "already running" in one_error_line(capsys)
    assert extract(model, data, out) == 0  # released: the run goes ahead


def test_finished_utterances_are_written_before_the_next_file_is_read(tmp_path, model):
    data = make_data_dir(tmp_path, n=2)
    out = tmp_path / "units"
    job = out / ".work" / "job1of1.jsonl"
    good = tmp_path / "audio" / "spk0-utt000.flac"
    # This entry succeeds only when both earlier utterances are already on disk.
    check = f"test $(cat '{job}' 2>/dev/null | wc -l) -ge 2 && cat '{good}' |"
    with open(data / "wav.scp", "a") as f:
        f.write(f"zz-third {check}\n")
    assert extract(model, data, out, "--batch-seconds", "0.01") == 0
    assert len(read_units(out / "units")) == 3


# --- pipes --------------------------------------------------------------------------------------------------


def test_pipe_failures_are_one_line_and_never_stop_the_job(tmp_path, model):
    data = make_data_dir(tmp_path, n=3)
    bad = {
        "zz-bytes": "printf 'caf\\351 \\377\\n' >&2; exit 3 |",
        "zz-lines": "printf 'first line\\nsecond line\\n' >&2; exit 1 |",
        "zz-sleep": "sleep 600 |",
        "zz-stdin": "cat |",
    }
    with open(data / "wav.scp", "a") as f:
        f.writelines(f"{utt} {cmd}\n" for utt, cmd in bad.items())
    out = tmp_path / "units"
    t0 = time.time()
    assert extract(model, data, out, "--pipe-timeout", "2") == 1
    assert time.time() - t0 < 60
    assert len(read_units(out / "units")) == 3
    failed = dict(line.split("\t") for line in (out / "failed.txt").read_text().splitlines())
    assert set(failed) == set(bad)
    assert "caf\ufffd" in failed["zz-bytes"] and "(3)" in failed["zz-bytes"]
    assert "first line second line" in failed["zz-lines"]
    assert "no result after 2 s" in failed["zz-sleep"]
    assert "unreadable audio" in failed["zz-stdin"]  # empty stdin, not the parent's


def test_a_timed_out_pipeline_leaves_no_process_behind(tmp_path):
    marker = tmp_path / "late"
    with pytest.raises(AudioError, match="no result after 1 s"):
        run_pipe(f"(sleep 3; touch '{marker}') | cat", timeout=1)
    time.sleep(3)
    assert not marker.exists()


def test_pipe_timeout_must_be_positive(tmp_path, model, capsys):
    data = make_data_dir(tmp_path, n=1)
    assert extract(model, data, tmp_path / "u", "--pipe-timeout", "0") == 2
    assert "--pipe-timeout must be > 0" in one_error_line(capsys)


def test_help_says_a_data_dir_is_code(capsys):
    for command in ("extract-units", "train-codec", "evaluate", "data-dir", "train-kmeans"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "a data dir is code" in " ".join(capsys.readouterr().out.split())


# --- ids ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "utt, problem",
    [
        ("../../../evil", "'/'"),
        ("/tmp/abs", "'/'"),
        ("a\\b", "'\\'"),
        (".hidden", "start with '.'"),
        ("tab\x07bell", "control characters"),
    ],
)
def test_ids_that_could_form_a_path_are_refused_naming_file_and_line(tmp_path, utt, problem):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"a x.wav\n{utt} y.wav\n")
    (data / "utt2spk").write_text(f"a s\n{utt} s\n")
    for reader in (read_data_dir, validate_data_dir):
        with pytest.raises(UserError, match=rf"(wav.scp|utt2spk):2: bad id .*{re.escape(problem)}"):
            reader(data)
    units = tmp_path / "units"
    units.write_text(f"good 1 2\n{utt} 3 4\n")
    with pytest.raises(UserError, match=rf"units:2: bad id .*{re.escape(problem)}"):
        read_units(units)


def test_resynth_never_writes_outside_its_out_dir(tmp_path, model, capsys):
    data, units = make_data_dir(tmp_path, n=2), tmp_path / "units"
    assert extract(model, data, units) == 0
    for name in ("units", "units.level1"):
        text = (units / name).read_text().splitlines(keepends=True)
        (units / name).write_text(text[0] + "../../../evil" + text[1][text[1].index(" ") :])
    out = tmp_path / "a" / "b" / "rs"
    capsys.readouterr()
    assert main(["resynth", "--model", str(model), "--units", str(units), "--out", str(out)]) == 2
    assert "bad id '../../../evil'" in one_error_line(capsys)
    assert not list(tmp_path.rglob("evil*"))


# --- training data ------------------------------------------------------------------------------------------


def test_unreadable_training_files_are_dropped_and_reported_once(tmp_path, caplog):
    data = make_data_dir(tmp_path, n=4, bad={f"zz-bad{i}": tmp_path / f"missing{i}.wav" for i in range(4)})
    ds = CropDataset(data, SR, 800)
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="vqaudio.data.dataset"):
        crops = [ds[i % len(ds)] for i in range(80)]  # half the corpus is unreadable: training goes on
    assert all(c.shape == (1, 800) for c in crops)
    dropped = [r.getMessage() for r in caplog.records if "dropping" in r.getMessage()]
    assert len(dropped) == 4 and len({m.split()[1] for m in dropped}) == 4  # each bad file reported once
    assert int(ds.bad.sum()) == 4


def test_training_stops_with_a_clear_message_when_too_few_files_remain(tmp_path):
    data = make_data_dir(tmp_path, n=1, bad={f"zz-bad{i}": tmp_path / f"missing{i}.wav" for i in range(19)})
    ds = CropDataset(data, SR, 800)
    with pytest.raises(AudioError, match=r"19 of 20 utterances are unreadable, too few remain"):
        for i in range(len(ds)):
            ds[i]


# --- one line for user errors -------------------------------------------------------------------------------


def test_encode_decode_bad_paths_are_one_line(tmp_path, model, capsys):
    wav, fake = tmp_path / "a.wav", tmp_path / "fake.vqc"
    sf.write(wav, synth_utterance(0.5, seed=1), SR)
    fake.write_bytes(wav.read_bytes())
    cases = [
        (["encode", "--model", str(model), str(tmp_path / "missing.wav"), str(tmp_path / "a.vqc")], "no such file"),
        (["decode", "--model", str(model), str(tmp_path / "missing.vqc"), str(tmp_path / "b.wav")], "no such file"),
        (["decode", "--model", str(model), str(wav), str(tmp_path / "b.wav")], "no .vqc/.npy/.txt files"),
        (["decode", "--model", str(model), str(fake), str(tmp_path / "b.wav")], "not a vqaudio codes file"),
        (["decode", "--model", str(model), str(fake), str(tmp_path / "b.xyz")], "audio extension"),
        (["decode", "--model", str(tmp_path / "nope.pt"), str(fake), str(tmp_path / "b.wav")], "nope.pt"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in one_error_line(capsys)


def test_an_unwritable_exp_dir_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    data = make_data_dir(tmp_path, n=1)
    conf = ROOT / "recipes" / "librispeech" / "conf" / "codec_tiny.yaml"
    argv = ["train-codec", "--config", str(conf), "--train-data", str(data), "--valid-data", str(data)]
    assert main([*argv, "--exp-dir", str(blocker / "exp")]) == 2
    assert "cannot write there" in one_error_line(capsys)


def test_a_corrupt_prior_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "prior.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    assert main(["sample", "--prior", str(bad), "--codec", str(bad), "--out", str(tmp_path / "s")]) == 2
    assert str(bad) in one_error_line(capsys)


# --- recipes ------------------------------------------------------------------------------------------------


def test_data_prep_keeps_corpus_paths_with_spaces(tmp_path):
    part = tmp_path / "my corpus" / "LibriSpeech" / "dev-clean-2" / "1" / "2"
    part.mkdir(parents=True)
    sf.write(part / "1-2-0000.flac", synth_utterance(0.5, seed=0), SR)
    (part / "1-2.trans.txt").write_text("1-2-0000 HELLO\n")
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    dst = tmp_path / "data"
    subprocess.run(
        ["bash", "local/data_prep.sh", str(part.parents[1]), str(dst)],
        cwd=ROOT / "recipes" / "librispeech",
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (dst / "wav.scp").read_text() == f"1-2-0000 {part / '1-2-0000.flac'}\n"
    assert read_data_dir(dst)[0].source == str(part / "1-2-0000.flac")
    assert load_audio(read_data_dir(dst)[0].source, SR).shape == (SR // 2,)


def test_a_relative_corpus_dir_is_read_from_where_run_sh_was_started(tmp_path):
    for part in ("train-clean-5", "dev-clean-2"):
        (tmp_path / "rel" / "LibriSpeech" / part).mkdir(parents=True)
    res = subprocess.run(
        ["bash", str(ROOT / "recipes" / "librispeech" / "run.sh"), "--corpus_dir", "rel", "--stop_stage", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert f"{tmp_path}/rel/LibriSpeech/train-clean-5 is there" in res.stdout


def test_from_caller_keeps_recipe_relative_paths(tmp_path):
    script = (
        f". '{ROOT / 'recipes' / 'utils' / 'recipe_lib.sh'}'; caller_dir='{tmp_path}'; "
        "options_given=' codec_config corpus_dir'; codec_config=conf/codec_tiny.yaml; corpus_dir=mine; "
        "prior_config=conf/nope.yaml; from_caller codec_config corpus_dir prior_config; "
        'echo "$codec_config|$corpus_dir|$prior_config"'
    )
    res = subprocess.run(["bash", "-c", script], cwd=ROOT / "recipes" / "librispeech", capture_output=True, text=True)
    # conf/ exists only in the recipe; 'mine' exists nowhere (taken from the caller); prior_config was a default
    assert res.stdout.strip() == f"conf/codec_tiny.yaml|{tmp_path}/mine|conf/nope.yaml"


def test_a_file_longer_than_a_batch_is_encoded_alone(tmp_path, model):
    data = tmp_path / "data"
    data.mkdir()
    wav = np.concatenate([synth_utterance(4.0, seed=s) for s in range(3)])
    sf.write(tmp_path / "long.flac", wav, SR)
    (data / "wav.scp").write_text(f"long {tmp_path / 'long.flac'}\n")
    whole = small_codec().encode(torch.from_numpy(wav)[None, None])[0].tolist()
    assert extract(model, data, tmp_path / "u", "--batch-seconds", "1") == 0
    assert read_units(tmp_path / "u" / "units")["long"] == whole[0]
