"""``train_codec``: the whole codec training job (data, Lightning trainer, checkpoints, export)."""

from __future__ import annotations

import logging
import pathlib

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, RandomSampler

from ..config import load_yaml, save_yaml, to_dict
from ..data import CropDataset
from ..models.codec import Codec
from .codec_task import CodecTask
from .config import TrainCodecConfig
from .logs import add_file_log

log = logging.getLogger(__name__)
BATCHES_PER_EPOCH = 200


def _loaders(cfg: TrainCodecConfig, train_dir: str, valid_dir: str) -> tuple[DataLoader, DataLoader]:
    sr, d = cfg.model.sample_rate, cfg.data
    train = CropDataset(train_dir, sr, int(d.segment_seconds * sr))
    valid = CropDataset(valid_dir, sr, None)
    valid.utts = valid.utts[: d.valid_max_utts]
    valid.utts = [
        u
        if u.end is not None or d.valid_max_seconds <= 0
        else type(u)(u.utt_id, u.source, u.start, u.start + d.valid_max_seconds)
        for u in valid.utts
    ]
    # Sampling with replacement: a corpus smaller than a batch still trains; an "epoch" is a fixed count.
    sampler = RandomSampler(train, replacement=True, num_samples=d.batch_size * BATCHES_PER_EPOCH)
    workers = dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    return (
        DataLoader(train, d.batch_size, sampler=sampler, drop_last=True, **workers),
        DataLoader(valid, 1, shuffle=False, **workers),
    )


def export_codec(checkpoint: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """Write the codec weights of a Lightning checkpoint as a self-describing ``model.pt``."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = payload["hyper_parameters"]["config"]
    codec = Codec.from_config(cfg["model"])
    prefix = "codec."
    codec.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    return codec.save_pretrained(out)


def train_codec(
    config: str | pathlib.Path | TrainCodecConfig | None,
    train_data: str,
    valid_data: str,
    exp_dir: str | pathlib.Path,
    resume: bool = False,
    overrides: dict | None = None,
) -> pathlib.Path:
    """Train a codec; returns the path of the exported ``model.pt`` (best validation mel distance).

    Args:
        config: YAML path or config object; on ``resume`` the experiment's own ``config.yaml`` is used.
        train_data, valid_data: Kaldi data dirs.
        exp_dir: experiment dir (config.yaml, checkpoints/, tb/, log/train.log, model.pt).
        resume: continue from ``checkpoints/last.ckpt``.
        overrides: trainer fields to override, e.g. ``{"max_steps": 100, "devices": "2"}``.
    """
    exp = pathlib.Path(exp_dir)
    ckpt_dir = exp / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    saved = exp / "config.yaml"
    if resume and saved.is_file():
        cfg = load_yaml(TrainCodecConfig, saved)
    elif isinstance(config, TrainCodecConfig):
        cfg = config
    elif config is not None:
        cfg = load_yaml(TrainCodecConfig, config)
    else:
        cfg = TrainCodecConfig()
    if not resume and last.exists():
        raise ValueError(
            f"{exp} already holds checkpoints ({last}); pass --resume to continue it or choose another --exp-dir"
        )
    for key, value in (overrides or {}).items():
        if not hasattr(cfg.trainer, key):
            raise ValueError(f"unknown trainer override {key!r}")
        setattr(cfg.trainer, key, type(getattr(cfg.trainer, key))(value))
    exp.mkdir(parents=True, exist_ok=True)
    add_file_log(exp / "log" / "train.log")
    save_yaml(cfg, saved)
    log.info("training codec in %s (resume=%s): %s", exp, resume and last.exists(), to_dict(cfg))
    pl.seed_everything(cfg.trainer.seed, workers=True)
    train_loader, valid_loader = _loaders(cfg, train_data, valid_data)
    task = CodecTask(to_dict(cfg))
    t = cfg.trainer
    best = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor="val/mel_distance",
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
    )
    latest = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="latest",
        every_n_train_steps=t.checkpoint_every,
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,
    )
    trainer = pl.Trainer(
        max_steps=-1,
        max_epochs=-1,
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=t.log_every,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        default_root_dir=exp,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(exp, name="tb", version=""),
        callbacks=[best, latest, LearningRateMonitor()],
        enable_model_summary=False,
    )
    trainer.fit(
        task, train_loader, valid_loader, ckpt_path=str(last) if resume and last.exists() else None, weights_only=True
    )
    trainer.save_checkpoint(last, weights_only=False)
    model = exp / "model.pt"
    if trainer.is_global_zero:
        source = pathlib.Path(best.best_model_path) if best.best_model_path else last
        export_codec(source, model)
        export_codec(last, exp / "model_last.pt")
        log.info(
            "exported %s (from %s, val/mel_distance %s) after %d codec steps",
            model,
            source.name,
            best.best_model_score,
            int(task.gen_steps),
        )
    return model
