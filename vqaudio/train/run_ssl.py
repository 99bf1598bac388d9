"""``train_ssl``: the ``vqaudio train-ssl`` job (data, Lightning trainer, checkpoints, export as a transformers
model folder)."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import shutil

import torch
from torch.utils.data import DataLoader, RandomSampler

from ..checkpoint import model_checksum
from ..config import load_yaml, to_dict
from ..data import CropDataset
from ..errors import UserError
from ..fileio import atomic_write_text
from ..units.ssl import require_transformers
from .config import TrainSSLConfig
from .content import TeacherTargets, check_teacher
from .experiment import fit, prepare_experiment
from .ssl_task import SSLTask

log = logging.getLogger(__name__)
SAMPLE_RATE, HOP = 16000, 320  # HuBERT's conv feature encoder
BATCHES_PER_EPOCH = 200
TARGETS_FILE = "ssl_targets.json"
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "preprocessor_config.json")  # a model folder


def _targets_record(exp: pathlib.Path, targets: pathlib.Path, resume: bool) -> dict:
    """What the units come from (path and sha256), written once; a resumed run must predict the same units."""
    record = {"targets": str(targets.resolve()), "sha256": model_checksum(targets)}
    saved = exp / TARGETS_FILE
    if resume and saved.is_file():
        before = json.loads(saved.read_text())
        if before.get("sha256") != record["sha256"]:
            raise UserError(
                f"--resume: {targets} is another unit model (sha256 {record['sha256'][:12]}...) than the one "
                f"{exp} was trained on ({before.get('targets')}, {str(before.get('sha256'))[:12]}...)"
            )
    atomic_write_text(saved, json.dumps(record, indent=2) + "\n")
    return record


def export_ssl(task: SSLTask, exp: pathlib.Path, checkpoint: pathlib.Path, record: dict, steps: int) -> None:
    """Write the HuBERT of ``checkpoint`` into ``exp`` as a transformers model folder (``config.json``,
    ``model.safetensors``, ``preprocessor_config.json``), each file replaced atomically."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    task.load_state_dict(payload["state_dict"])
    tmp = exp / ".export"
    shutil.rmtree(tmp, ignore_errors=True)
    task.hubert.save_pretrained(tmp)
    layer_norm = task.hubert.config.feat_extract_norm == "layer"
    require_transformers().Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, do_normalize=layer_norm, return_attention_mask=layer_norm
    ).save_pretrained(tmp)
    for f in sorted(tmp.iterdir()):
        os.replace(f, exp / f.name)
    tmp.rmdir()
    log.info("exported the HuBERT of %s (%d steps, targets %s) to %s", checkpoint.name, steps, record["targets"], exp)


def train_ssl(
    config: str | pathlib.Path | TrainSSLConfig | None,
    train_data: str,
    valid_data: str,
    exp_dir: str | pathlib.Path,
    targets: str | None = None,
    resume: bool = False,
    overrides: dict | None = None,
    allow_config_change: bool = False,
) -> pathlib.Path:
    """Train a HuBERT from scratch on masked prediction of ``targets``' units; returns ``exp_dir``, a
    transformers model folder (best validation loss) that ``--ssl-model`` takes.

    Args:
        config: YAML path or config object; on ``resume`` the experiment's own ``config.yaml``.
        targets: the unit model (``data.targets`` of the config when omitted).
        overrides: trainer fields to override (``max_steps``, ``devices``...), or ``section.name``.
    """
    exp = pathlib.Path(exp_dir)
    held = [name for name in MODEL_FILES if (exp / name).exists()]
    if held and not (exp / TARGETS_FILE).is_file():
        raise UserError(
            f"--exp-dir {exp}: holds a model ({held[0]}) that train-ssl did not write; training there would replace "
            "it: choose another --exp-dir"
        )
    if held and not resume:
        raise UserError(f"--exp-dir {exp}: holds a trained model; pass --resume to continue it or choose another")
    if isinstance(config, (str, pathlib.Path)):
        config = load_yaml(TrainSSLConfig, config)
    if targets is not None and config is None and resume:  # the saved config, whose targets must match
        overrides = {**(overrides or {}), "data.targets": str(targets)}
    elif targets is not None:
        config = config or TrainSSLConfig()
        config.data.targets = str(targets)
    cfg = prepare_experiment(TrainSSLConfig, config, exp, resume, overrides, "ssl", allow_config_change)
    if not cfg.data.targets:
        raise UserError("train-ssl needs the units to predict: --targets UNIT_MODEL (or data.targets in the config)")
    from ..units.model import load_unit_model

    path = pathlib.Path(cfg.data.targets)
    teacher = load_unit_model(path).eval()
    check_teacher(teacher, SAMPLE_RATE, HOP, path)
    if teacher.n_q != 1:
        log.info("targets: level 0 of the %d levels of %s", teacher.n_q, path)
    record = _targets_record(exp, path, resume)
    task = SSLTask(to_dict(cfg), teacher.codebook_size, record["sha256"])
    d = cfg.data
    frame_targets = dict(frame_targets=TeacherTargets(teacher), hop=HOP)
    segment = round(d.segment_seconds * SAMPLE_RATE / HOP) * HOP
    train = CropDataset(train_data, SAMPLE_RATE, segment, **frame_targets)
    valid = CropDataset(valid_data, SAMPLE_RATE, round(d.valid_max_seconds * SAMPLE_RATE / HOP) * HOP, **frame_targets)
    valid.select(valid.utts[: d.valid_max_utts])
    sampler = RandomSampler(train, replacement=True, num_samples=d.batch_size * BATCHES_PER_EPOCH)
    workers = dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    train_loader = DataLoader(train, d.batch_size, sampler=sampler, drop_last=True, **workers)
    valid_loader = DataLoader(valid, min(d.batch_size, len(valid)), shuffle=False, **workers)
    trainer, best = fit(
        task, train_loader, valid_loader, cfg.trainer, exp, resume, "val/loss", max_steps=cfg.trainer.max_steps
    )
    if trainer.is_global_zero:
        export_ssl(task, exp, best, record, int(trainer.global_step))
    return exp
