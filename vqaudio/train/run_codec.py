"""``train_codec``: the whole codec training job (data, Lightning trainer, checkpoints, export)."""

from __future__ import annotations

import logging
import math
import pathlib

import torch
from pytorch_lightning.utilities import CombinedLoader
from torch.utils.data import DataLoader, RandomSampler

from ..config import to_dict
from ..data import CropDataset
from ..errors import UserError
from ..models.codec import Codec
from .codec_task import CodecTask
from .config import TrainCodecConfig
from .content import TeacherTargets, TextUtterances, collate_text
from .experiment import fit, prepare_experiment

log = logging.getLogger(__name__)
BATCHES_PER_EPOCH = 200


def _loaders(task: CodecTask, train_dir: str, valid_dir: str):
    cfg = task.cfg
    sr, d, c = cfg.model.sample_rate, cfg.data, cfg.content
    targets = {}
    if c.objective == "distill":  # the teacher's features themselves are the targets
        targets = dict(frame_targets=task.teacher, hop=task.codec.hop_length)
    elif task.teacher is not None:
        targets = dict(frame_targets=TeacherTargets(task.teacher), hop=task.codec.hop_length)
    train = CropDataset(train_dir, sr, int(d.segment_seconds * sr), **targets)
    valid = CropDataset(valid_dir, sr, None)
    valid.select(
        u
        if u.end is not None or d.valid_max_seconds <= 0
        else type(u)(u.utt_id, u.source, u.start, u.start + d.valid_max_seconds)
        for u in valid.utts[: d.valid_max_utts]
    )
    # Sampling with replacement: a corpus smaller than a batch still trains; an "epoch" is a fixed count.
    sampler = RandomSampler(train, replacement=True, num_samples=d.batch_size * BATCHES_PER_EPOCH)
    workers = dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    train_loader = DataLoader(train, d.batch_size, sampler=sampler, drop_last=True, **workers)
    valid_loader = DataLoader(valid, 1, shuffle=False, **workers)
    if c.objective == "ctc":
        # Whole transcribed utterances beside the crops, one batch of each per step.
        text = TextUtterances(train_dir, sr, c.max_seconds)
        text_sampler = RandomSampler(text, replacement=True, num_samples=c.batch_size * BATCHES_PER_EPOCH)
        text_loader = DataLoader(
            text, c.batch_size, sampler=text_sampler, drop_last=True, collate_fn=collate_text, **workers
        )
        train_loader = CombinedLoader({"wav": train_loader, "text": text_loader}, mode="max_size_cycle")
    return train_loader, valid_loader


def export_codec(checkpoint: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """Write the codec weights of a Lightning checkpoint as a self-describing ``model.pt``."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = payload["hyper_parameters"]["config"]
    codec = Codec.from_config(cfg["model"])
    prefix = "codec."
    codec.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    return codec.save_pretrained(out, overwrite=True)  # train_codec refuses an existing model.pt up front


def train_codec(
    config: str | pathlib.Path | TrainCodecConfig | None,
    train_data: str,
    valid_data: str,
    exp_dir: str | pathlib.Path,
    resume: bool = False,
    overrides: dict | None = None,
    allow_config_change: bool = False,
) -> pathlib.Path:
    """Train a codec; returns the path of the exported ``model.pt`` (best validation mel distance).

    Args:
        config: YAML path or config object; on ``resume`` the experiment's own ``config.yaml`` is used.
        train_data, valid_data: Kaldi data dirs.
        exp_dir: experiment dir (config.yaml, checkpoints/, tb/, log/train.log, model.pt).
        resume: continue from ``checkpoints/last.ckpt``.
        overrides: trainer fields to override, e.g. ``{"max_steps": 100, "devices": "2"}``.
        allow_config_change: on ``resume``, continue with ``config`` even where it differs from the
            experiment's saved config (otherwise that is refused, naming the keys).
    """
    if (pathlib.Path(exp_dir) / "model.pt").exists() and not resume:
        raise UserError(
            f"{pathlib.Path(exp_dir) / 'model.pt'} exists; pass --resume to continue that experiment or choose "
            "another --exp-dir"
        )
    cfg = prepare_experiment(TrainCodecConfig, config, exp_dir, resume, overrides, "codec", allow_config_change)
    content = cfg.content
    if content.objective == "kmeans" and content.targets and not pathlib.Path(content.targets).exists():
        from ..units.kmeans import KMeansConfig, train_kmeans

        sr, hop = cfg.model.sample_rate, math.prod(cfg.model.strides)
        km = KMeansConfig(
            feature=content.kmeans_feature,
            k=content.kmeans_k,
            sample_rate=sr,
            frame_rate=sr / hop,
            deltas=content.kmeans_deltas,
            cmvn=content.kmeans_cmvn,
            context=content.kmeans_context,
        ).check()
        log.info("training the content targets %s on %s: %s", content.targets, train_data, to_dict(km))
        train_kmeans(train_data, content.targets, km)
    exp = pathlib.Path(exp_dir)
    if content.objective == "distill" and content.cache_dir is None:
        content.cache_dir = str(exp / "teacher_cache")
    task = CodecTask(to_dict(cfg))
    train_loader, valid_loader = _loaders(task, train_data, valid_data)
    trainer, best = fit(task, train_loader, valid_loader, cfg.trainer, exp, resume, "val/mel_distance")
    last = exp / "checkpoints" / "last.ckpt"
    model = exp / "model.pt"
    if trainer.is_global_zero:
        export_codec(best, model)
        export_codec(last, exp / "model_last.pt")
        log.info("exported %s (from %s) after %d codec steps", model, best.name, int(task.gen_steps))
    return model
