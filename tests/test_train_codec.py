"""Codec training through the CLI: a short real run, checkpoints, export, and resume after a kill."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest
import soundfile as sf
import torch
import yaml

from vqaudio.cli.main import main
from vqaudio.models import Codec

from .speech import SHARED, make_corpus

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "librispeech" / "conf" / "codec_tiny.yaml"


def data_dirs(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Kaldi data dirs over the shared mini subsets, or over a generated corpus."""
    corpus = SHARED / "LibriSpeech"
    if not (corpus / "train-clean-5").is_dir():
        make_corpus(tmp_path / "corpus", "train-clean-5", utts=4)
        make_corpus(tmp_path / "corpus", "dev-clean-2", speakers=1, utts=2)
        corpus = tmp_path / "corpus" / "LibriSpeech"
    out = []
    for split in ("train-clean-5", "dev-clean-2"):
        d = tmp_path / "data" / split
        d.mkdir(parents=True)
        files = sorted((corpus / split).rglob("*.flac"))
        (d / "wav.scp").write_text("".join(f"{f.stem} {f}\n" for f in files))
        out.append(d)
    return out[0], out[1]


def train_args(conf, train, valid, exp) -> list[str]:
    """The ``vqaudio train-codec`` arguments for a config, data dirs and an experiment dir."""
    return [
        "train-codec",
        "--config",
        str(conf),
        "--train-data",
        str(train),
        "--valid-data",
        str(valid),
        "--exp-dir",
        str(exp),
    ]


def tiny_config(tmp_path: pathlib.Path, **trainer) -> pathlib.Path:
    cfg = yaml.safe_load(TINY.read_text())
    cfg["trainer"].update(trainer)
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_codec_cli_trains_checkpoints_and_exports(tmp_path):
    train, valid = data_dirs(tmp_path)
    conf = tiny_config(tmp_path, max_steps=12, val_every=6, checkpoint_every=4, log_every=2)
    exp = tmp_path / "exp"
    # quantization from codec step 4 on and adversarial terms from step 6 on, so all three phases run
    cfg = yaml.safe_load(conf.read_text())
    cfg["loss"].update(quantizer_start=4, adversarial_start=6)
    conf.write_text(yaml.safe_dump(cfg))
    rc = main(train_args(conf, train, valid, exp))
    assert rc == 0
    for name in (
        "config.yaml",
        "model.pt",
        "model_last.pt",
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "log/train.log",
    ):
        assert (exp / name).is_file(), name
    assert list((exp / "tb").rglob("events.out.tfevents*"))
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert saved["loss"]["adversarial_start"] == 6 and saved["model"]["encoder_dim"] == 64
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert int(ckpt["state_dict"]["gen_steps"]) == 12
    # progress in the log file itself: every log_every (2) codec updates, and each validation (every 6)
    text = (exp / "log" / "train.log").read_text()
    updates = [int(m) for m in re.findall(r"update (\d+)/12: ", text)]
    assert updates == list(range(2, 13, 2)), updates
    assert re.search(r"update 12/12: .*mel [\d.]+.*updates/s, 0\.0 min left", text), text[-2000:]
    assert len(re.findall(r"validation at update (?:6|12): .*mel_distance [\d.]+", text)) == 2
    # the quantizer loss is exactly zero while warming up, then on; codebook metrics appear with it
    scalars = _scalars(exp, "train/quantizer")
    zero = [v == 0.0 for _, v in scalars]
    assert any(zero) and not all(zero) and zero == sorted(zero, reverse=True), scalars
    assert _scalars(exp, "codebook/perplexity")
    codec = Codec.from_pretrained(exp / "model.pt")
    assert all(bool(s.initted) for s in codec.quantizer.stages)  # k-means ran when quantization began
    wav = torch.from_numpy(sf.read(_first_wav(valid), dtype="float32")[0])[None, None]
    assert codec.decode(codec.encode(wav), length=wav.shape[-1]).shape == wav.shape
    # a second run into the same dir without --resume refuses rather than clobbering
    rc = main(train_args(conf, train, valid, exp))
    assert rc == 2


def _scalars(exp: pathlib.Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (exp / "tb").rglob("events.out.tfevents*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def _first_wav(data_dir: pathlib.Path) -> str:
    return (data_dir / "wav.scp").read_text().split("\n")[0].split()[1]


def test_a_killed_run_resumes_from_its_checkpoint(tmp_path):
    train, valid = data_dirs(tmp_path)
    conf = tiny_config(tmp_path, max_steps=40, val_every=1000, checkpoint_every=2, log_every=5)
    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "vqaudio.cli.main", *train_args(conf, train, valid, exp)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = exp / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.exists():
            try:
                step = int(torch.load(last, weights_only=True, map_location="cpu")["state_dict"]["gen_steps"])
            except Exception:  # being written right now
                step = 0
            if step >= 6:
                break
        time.sleep(0.5)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(torch.load(last, weights_only=True, map_location="cpu")["state_dict"]["gen_steps"])
    assert 6 <= killed_at < 40
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(last, weights_only=True, map_location="cpu")
    assert int(final["state_dict"]["gen_steps"]) == 40
    assert (
        "Restoring states from the checkpoint" in (exp / "log" / "train.log").read_text()
        or "Restored all states" in done.stderr
    )
    assert (exp / "model.pt").is_file()


@pytest.mark.parametrize("bad", ["missing", "corrupt"])
def test_training_survives_a_bad_file(tmp_path, bad):
    train, valid = data_dirs(tmp_path)
    scp = train / "wav.scp"
    if bad == "missing":
        scp.write_text(scp.read_text() + f"zzz-bad {tmp_path / 'nope.flac'}\n")
    else:
        junk = tmp_path / "junk.flac"
        junk.write_bytes(b"\x00" * 1000)
        scp.write_text(scp.read_text() + f"zzz-bad {junk}\n")
    conf = tiny_config(tmp_path, max_steps=8, val_every=1000, checkpoint_every=100, log_every=2)
    rc = main(train_args(conf, train, valid, tmp_path / "exp"))
    assert rc == 0


def test_two_process_ddp_training_runs_through_every_phase(tmp_path):
    # Parameters sit out phases (the quantizer before quantizer_start, the discriminators before
    # adversarial_start): plain DDP stops at the first such step, so "auto" must pick a tolerant DDP.
    train, valid = data_dirs(tmp_path)
    conf = tiny_config(tmp_path, max_steps=6, val_every=1000, checkpoint_every=100, log_every=2, devices="2")
    cfg = yaml.safe_load(conf.read_text())
    cfg["trainer"]["accelerator"] = "cpu"
    cfg["loss"].update(quantizer_start=2, adversarial_start=4)
    conf.write_text(yaml.safe_dump(cfg))
    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "vqaudio.cli.main", *train_args(conf, train, valid, exp)]
    done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    final = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert int(final["state_dict"]["gen_steps"]) == 6
    assert (exp / "model.pt").is_file()
