"""recipes/librispeech/run.sh end to end (all stages) on the shared mini subsets, or a generated corpus in the
same layout when they are absent; plus the recipe utilities (option parsing, validation, fix, split)."""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.data.kaldi import fix_data_dir, read_table, split_data_dir, validate_data_dir
from vqaudio.units import read_info, read_levels

from .speech import SHARED, make_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]


def recipe_copy(tmp_path: pathlib.Path, recipe: str = "librispeech") -> tuple[pathlib.Path, dict]:
    """The recipes copied into tmp (their relative symlinks intact), and an environment whose PATH has a
    `vqaudio` command."""
    shutil.copytree(
        ROOT / "recipes", tmp_path / "recipes", symlinks=True, ignore=shutil.ignore_patterns("data", "exp", "downloads")
    )
    rdir = tmp_path / "recipes" / recipe
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "vqaudio"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vqaudio.cli.main "$@"\n')
    shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    env.pop("VIRTUAL_ENV", None)
    return rdir, env


def run(rdir: pathlib.Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "run.sh", *args], cwd=rdir, env=env, capture_output=True, text=True, timeout=900)


def short_configs(rdir: pathlib.Path, codec_name: str = "codec_tiny") -> tuple[str, str]:
    codec = yaml.safe_load((rdir / "conf" / f"{codec_name}.yaml").read_text())
    codec["trainer"].update(max_steps=30, val_every=15, checkpoint_every=10)
    codec["loss"]["adversarial_start"] = 20
    prior = yaml.safe_load((rdir / "conf" / "prior_tiny.yaml").read_text())
    prior["trainer"].update(max_steps=20, val_every=10, checkpoint_every=10)
    vocoder = yaml.safe_load((rdir / "conf" / "vocoder_tiny.yaml").read_text())
    vocoder["trainer"].update(max_steps=8, val_every=4, checkpoint_every=4)
    vocoder["loss"]["adversarial_start"] = 6
    (rdir / "conf" / "codec_test.yaml").write_text(yaml.safe_dump(codec))
    (rdir / "conf" / "prior_test.yaml").write_text(yaml.safe_dump(prior))
    (rdir / "conf" / "vocoder_test.yaml").write_text(yaml.safe_dump(vocoder))
    return "conf/codec_test.yaml", "conf/prior_test.yaml"


def test_recipe_runs_every_stage_and_reruns_nothing(tmp_path):
    """The semantic codec config (k-means targets on level 0) through every stage, units scored against
    alignments."""
    rdir, env = recipe_copy(tmp_path)
    corpus = SHARED
    if not (SHARED / "LibriSpeech" / "train-clean-5").is_dir():
        corpus = make_corpus(tmp_path / "corpus", "train-clean-5", speakers=3, utts=3)
        make_corpus(corpus, "dev-clean-2", speakers=2, utts=2)
    codec_conf, prior_conf = short_configs(rdir, "codec_semantic_tiny")
    # phone alignments for the dev set, so that stage 4 also scores the units (a made-up phone every 0.1 s)
    ctm, phones = tmp_path / "phones.ctm", ["AA", "B", "SIL", "K", "IY"]
    lines = []
    for flac in sorted((corpus / "LibriSpeech" / "dev-clean-2").rglob("*.flac")):
        steps = int(sf.info(flac).duration * 10) - 1
        lines += [f"{flac.stem} 1 {k / 10:.2f} 0.10 {phones[k % len(phones)]}" for k in range(steps)]
    ctm.write_text("\n".join(lines) + "\n")
    args = [
        "--alignments",
        str(ctm),
        "--corpus_dir",
        str(corpus),
        "--codec_config",
        codec_conf,
        "--prior_config",
        prior_conf,
        "--tag",
        "t",
        "--num_samples",
        "2",
        "--sample_seconds",
        "1",
        "--vocoder_config",
        "conf/vocoder_test.yaml",
    ]
    # a stage run before its inputs exist says which stage to run first
    early = run(rdir, env, *args, "--stage", "3", "--stop_stage", "3")
    assert early.returncode != 0 and "run stage 2 first" in early.stderr
    done = run(rdir, env, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = rdir / "exp" / "t"
    for split in ("train_clean_5", "dev_clean_2"):
        d = rdir / "data" / split
        assert validate_data_dir(d) > 0
        utts = read_table(d / "wav.scp")
        spk = read_table(d / "utt2spk")
        assert all(u.startswith(spk[u] + "-") for u in utts)  # reader-chapter prefixes the utterance id
        units = read_levels(exp / "units" / split)
        info = read_info(exp / "units" / split)
        assert set(units) == set(utts) and info.frame_rate == 50.0
        for utt, path in utts.items():
            n = sf.info(path).frames
            assert len(units[utt][0]) == math.ceil(n / 320), utt
    for utt, path in read_table(rdir / "data" / "dev_clean_2" / "wav.scp").items():
        hyp = exp / "resynth" / "dev_clean_2" / f"{utt}.wav"
        assert len(sf.read(hyp)[0]) == math.ceil(sf.info(path).frames / 320) * 320
    results = (exp / "RESULTS.md").read_text()
    assert re.search(r"\| SI-SDR dB \(higher\) \| -?\d+\.\d+ \|", results), results
    assert re.search(r"\| PNMI \(higher is better\) \| \d\.\d+ \|", results), results
    assert (exp / "eval" / "dev_clean_2" / "code_usage.png").is_file()
    assert (exp / "unit_quality" / "dev_clean_2" / "abx.item").is_file()
    assert sorted(p.name for p in (exp / "samples").glob("*.wav")) == ["sample_0000.wav", "sample_0001.wav"]
    assert (exp / "log" / "train_codec.log").is_file() and (exp / "log" / "train_prior.log").is_file()
    # stage 7: the unit vocoder on level 0, each dev utterance in its speaker's voice, conversions, their scores
    dev = read_table(rdir / "data" / "dev_clean_2" / "wav.scp")
    voc = exp / "vocoder"
    assert (voc / "model.pt" / "config.json").is_file() and (exp / "log" / "train_vocoder.log").is_file()
    assert sorted(p.stem for p in (voc / "resynth" / "dev_clean_2").glob("*.wav")) == sorted(dev)
    pairs = [line.split() for line in (voc / "convert" / "dev_clean_2" / "pairs").read_text().splitlines()]
    dev_spk = read_table(rdir / "data" / "dev_clean_2" / "utt2spk")
    assert pairs and all(dev_spk[u] != dev_spk[r] for u, r in pairs)
    assert sorted(p.stem for p in (voc / "convert" / "dev_clean_2").glob("*.wav")) == sorted(u for u, _ in pairs)
    converted = json.loads((voc / "eval_convert" / "dev_clean_2" / "metrics.json").read_text())
    assert converted["conversions"] + converted["conversions_unscored"] == len(pairs)
    assert "wer" in converted and "wer" in json.loads((voc / "eval" / "dev_clean_2" / "metrics.json").read_text())
    assert "voice conversion" in (voc / "RESULTS.md").read_text()
    model = exp / "codec" / "model.pt"
    assert torch.load(model, weights_only=True)["config"]["content_objective"] == "kmeans"
    assert (rdir / "exp" / "kmeans" / "mfcc_cmvn_ctx2_256.pt").is_file()  # its targets, trained first
    before = model.stat().st_mtime_ns
    again = run(rdir, env, *args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("is done, skipping") >= 8
    assert "training" not in again.stdout and model.stat().st_mtime_ns == before


def test_no_corpus_and_no_network_says_what_to_do(tmp_path):
    rdir, env = recipe_copy(tmp_path)
    env["PATH"] = f"{tmp_path / 'bin'}:/usr/bin:/bin"
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "curl").write_text("#!/bin/sh\nexit 6\n")  # a machine without network
    (fake / "curl").chmod(0o755)
    env["PATH"] = f"{fake}:{env['PATH']}"
    res = run(rdir, env, "--corpus_dir", str(tmp_path / "nothing"), "--stop_stage", "0")
    assert res.returncode != 0
    assert "--corpus_dir" in res.stderr and "train-clean-5" in res.stderr, res.stderr


def parse(tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "opts.sh"
    script.write_text(
        f'foo_bar=1\nflag=false\nhelp_message="usage: demo"\n. {ROOT}/recipes/utils/parse_options.sh\n'
        'echo "foo_bar=$foo_bar flag=$flag rest=$*"\n'
    )
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True)


def test_parse_options_has_kaldi_semantics(tmp_path):
    assert parse(tmp_path, "--foo-bar", "7", "--flag", "true", "x").stdout.strip() == "foo_bar=7 flag=true rest=x"
    assert parse(tmp_path, "--foo_bar", "8").stdout.strip() == "foo_bar=8 flag=false rest="
    bad = parse(tmp_path, "--nope", "1")
    assert bad.returncode == 1 and "unknown option --nope" in bad.stderr
    notbool = parse(tmp_path, "--flag", "yes")
    assert notbool.returncode == 1 and "takes true or false" in notbool.stderr
    helped = parse(tmp_path, "--help")
    assert helped.returncode == 0 and "usage: demo" in helped.stdout
    conf = tmp_path / "c.conf"
    conf.write_text("foo_bar=from_config\n")
    assert parse(tmp_path, "--config", str(conf)).stdout.startswith("foo_bar=from_config")
    assert parse(tmp_path, "--config", str(conf), "--foo-bar", "cli").stdout.startswith("foo_bar=cli")


def write_dir(d: pathlib.Path, **tables: str) -> pathlib.Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (d / name.replace("_scp", ".scp")).write_text(text)
    return d


def test_validate_names_file_and_line_and_fix_repairs(tmp_path):
    good = dict(
        wav_scp="a-1-1 x.flac\na-1-2 y.flac\nb-2-1 z.flac\n",
        utt2spk="a-1-1 a-1\na-1-2 a-1\nb-2-1 b-2\n",
        spk2utt="a-1 a-1-1 a-1-2\nb-2 b-2-1\n",
        text="a-1-1 HI\na-1-2 HO\nb-2-1 HA\n",
    )
    assert validate_data_dir(write_dir(tmp_path / "good", **good)) == 3
    unsorted = dict(good, utt2spk="a-1-2 a-1\na-1-1 a-1\nb-2-1 b-2\n")
    with pytest.raises(ValueError, match=r"utt2spk:2: not sorted in C locale order"):
        validate_data_dir(write_dir(tmp_path / "unsorted", **unsorted))
    no_newline = dict(good, text="a-1-1 HI\na-1-2 HO\nb-2-1 HA")
    with pytest.raises(ValueError, match=r"text: last line has no trailing newline"):
        validate_data_dir(write_dir(tmp_path / "nonl", **no_newline))
    inverse = dict(good, spk2utt="a-1 a-1-1\nb-2 b-2-1\n")
    with pytest.raises(ValueError, match=r"spk2utt is not the inverse of .*utt2spk"):
        validate_data_dir(write_dir(tmp_path / "inv", **inverse))
    extra = dict(good, text="a-1-1 HI\na-1-2 HO\nb-2-1 HA\nc-3-1 HU\n")
    with pytest.raises(ValueError, match=r"text and .*utt2spk list different utterances, e.g. 'c-3-1'"):
        validate_data_dir(write_dir(tmp_path / "extra", **extra))
    broken = write_dir(tmp_path / "broken", **dict(unsorted, text="b-2-1 HA\na-1-1 HI\n"))
    assert fix_data_dir(broken) == 2  # a-1-2 has no text: dropped everywhere
    assert validate_data_dir(broken) == 2


def test_split_by_speaker_covers_everything_once(tmp_path):
    lines = [(f"s{s}-1-{u}", f"s{s}-1") for s in range(5) for u in range(s + 1)]
    d = write_dir(
        tmp_path / "d",
        wav_scp="".join(f"{u} {u}.flac\n" for u, _ in lines),
        utt2spk="".join(f"{u} {s}\n" for u, s in lines),
    )
    fix_data_dir(d)
    shards = split_data_dir(d, 3)
    seen = []
    for shard in shards:
        validate_data_dir(shard)
        seen += list(read_table(shard / "utt2spk"))
        speakers = set(read_table(shard / "utt2spk").values())
        assert speakers and all(not (speakers & set(read_table(o / "utt2spk").values())) for o in shards if o != shard)
    assert sorted(seen) == sorted(u for u, _ in lines)
    with pytest.raises(ValueError, match=r"--nj must lie in \[1, 5\]"):
        split_data_dir(d, 6)


def test_local_launcher_runs_job_arrays_with_kaldi_semantics(tmp_path):
    launcher = ROOT / "recipes" / "utils" / "run_local.sh"
    script = "echo job JOB of $0; [ JOB != 2 ]"
    res = subprocess.run(
        ["bash", str(launcher), "--gpu", "1", "JOB=1:3", "log/t.JOB.log", "bash", "-c", script, "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and "1 of 3 job(s) failed; see log/t.2.log" in res.stderr
    for job in (1, 2, 3):
        log = (tmp_path / "log" / f"t.{job}.log").read_text()
        assert f"job {job} of x" in log and f"# Ended (code {int(job == 2)})" in log
    one = subprocess.run(["bash", str(launcher), "one.log", "echo", "a  b"], cwd=tmp_path, capture_output=True)
    assert one.returncode == 0 and "\na  b\n" in (tmp_path / "one.log").read_text()


def test_slurm_backend_gives_the_training_stages_the_gpu_options(tmp_path):
    """cmd_backend=slurm: every job is an srun step; training gets slurm_gpu_opts, extraction does not."""
    rdir, env = recipe_copy(tmp_path)
    corpus = make_corpus(tmp_path / "corpus", "train-clean-5", speakers=2, utts=2)
    make_corpus(corpus, "dev-clean-2", speakers=1, utts=2)
    codec_conf, prior_conf = short_configs(rdir)
    calls = tmp_path / "srun_calls.txt"
    srun = tmp_path / "bin" / "srun"
    # a stand-in for srun: records its options, runs the command
    srun.write_text(
        f'#!/usr/bin/env bash\nopts=()\nwhile [[ "$1" == --* ]]; do opts+=("$1"); shift; done\n'
        f'echo "${{opts[*]}} :: $1 $2" >> {calls}\nexec "$@"\n'
    )
    srun.chmod(0o755)
    env = dict(env, cmd_backend="slurm", slurm_gpu_opts="--gres=gpu:2")
    args = ["--corpus_dir", str(corpus), "--codec_config", codec_conf, "--prior_config", prior_conf, "--tag", "s"]
    res = run(rdir, env, *args, "--stop_stage", "3", "--nj", "2")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    lines = calls.read_text().splitlines()
    train = [line for line in lines if "vqaudio train-codec" in line]
    extract = [line for line in lines if "vqaudio extract-units" in line]
    assert len(train) == 1 and "--gres=gpu:2" in train[0] and "--time=24:00:00" in train[0]
    assert len(extract) == 4 and not any("--gres" in line for line in extract)  # 2 jobs x (train + dev set)
    assert read_info(rdir / "exp" / "s" / "units" / "dev_clean_2").num_utterances == 2
