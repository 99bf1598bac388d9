"""What every training job shares: the experiment dir, its config, and a Lightning trainer with checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import TypeVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from ..config import check_ranges, load_yaml, save_yaml, to_dict
from ..errors import UserError
from .config import TrainerConfig
from .logs import add_file_log

log = logging.getLogger(__name__)
C = TypeVar("C")


def _apply_overrides(cfg, overrides: dict | None):
    """Set ``name`` (a trainer field) or ``section.name`` for each override; returns ``cfg``."""
    for key, value in (overrides or {}).items():
        section, name = key.split(".", 1) if "." in key else ("trainer", key)
        part = getattr(cfg, section, None)
        if part is None or not hasattr(part, name):
            raise UserError(f"unknown override {section}.{name}")
        setattr(part, name, type(getattr(part, name))(value))
    return cfg


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    keys = []
    for k in sorted(set(a) | set(b)):
        x, y = a.get(k), b.get(k)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += _differences(x, y, f"{prefix}{k}.")
        elif x != y:
            keys.append(f"{prefix}{k}")
    return keys


def prepare_experiment(
    cls: type[C],
    config,
    exp_dir,
    resume: bool,
    overrides: dict | None,
    what: str,
    allow_config_change: bool = False,
) -> C:
    """Load the config (the experiment's own ``config.yaml`` on resume, which a different ``config`` may only
    replace with ``allow_config_change``), apply overrides (``name`` for a trainer field, ``section.name``
    for any other), check every value's range, refuse to clobber an existing run, start ``log/train.log``
    and save ``config.yaml``."""
    exp = pathlib.Path(exp_dir)
    last = exp / "checkpoints" / "last.ckpt"
    saved = exp / "config.yaml"
    given = "the given config" if isinstance(config, cls) else str(config)  # a config object's repr is no name
    if resume and saved.is_file() and config is not None and allow_config_change:
        cfg = config if isinstance(config, cls) else load_yaml(cls, config)
        log.warning("--resume with --allow-config-change: continuing %s with %s", exp, given)
    elif resume and saved.is_file():
        cfg = load_yaml(cls, saved)
        if config is not None and not allow_config_change:
            wanted = _apply_overrides(config if isinstance(config, cls) else load_yaml(cls, config), overrides)
            overridden = {k if "." in k else f"trainer.{k}" for k in overrides or {}}
            changed = [k for k in _differences(to_dict(cfg), to_dict(wanted)) if k not in overridden]
            if changed:
                raise UserError(
                    f"--resume: {given} differs from the experiment's {saved} in {', '.join(changed)}; resume "
                    "without --config to keep the saved one, or pass --allow-config-change to continue with it"
                )
    elif isinstance(config, cls):
        cfg = config
    elif config is not None:
        cfg = load_yaml(cls, config)
    else:
        cfg = cls()
    if not resume and last.exists():
        raise UserError(
            f"{exp} already holds checkpoints ({last}); pass --resume to continue it or choose another --exp-dir"
        )
    cfg = _apply_overrides(cfg, overrides)
    for section in dataclasses.fields(cfg):  # overrides and Python-built configs meet the same ranges as YAML
        check_ranges(getattr(cfg, section.name), f"config {section.name}")
    try:
        exp.mkdir(parents=True, exist_ok=True)
        add_file_log(exp / "log" / "train.log")
        save_yaml(cfg, saved)
    except OSError as err:
        raise UserError(f"--exp-dir {exp}: cannot write there ({err.strerror or err})") from None
    log.info("training %s in %s (resume=%s): %s", what, exp, resume and last.exists(), to_dict(cfg))
    pl.seed_everything(cfg.trainer.seed, workers=True)
    return cfg


def _num_processes(t: TrainerConfig) -> int:
    """Processes per node that ``accelerator``/``devices`` ask for, as Lightning counts them."""
    devices = str(t.devices).strip()
    gpu = t.accelerator in ("gpu", "cuda") or (t.accelerator == "auto" and torch.cuda.is_available())
    if devices in ("auto", "-1"):
        return torch.cuda.device_count() if gpu else 1
    if "," in devices or devices.startswith("["):
        return len([d for d in devices.strip("[]").split(",") if d.strip()])
    return int(devices)


def _strategy(t: TrainerConfig) -> str:
    """``auto`` becomes DDP that tolerates unused parameters when more than one process trains: the
    discriminators sit out until ``adversarial_start`` and the quantizer until ``quantizer_start``, and
    plain DDP stops at the first step where a parameter gets no gradient."""
    if t.strategy == "auto" and t.num_nodes * _num_processes(t) > 1:
        return "ddp_find_unused_parameters_true"
    return t.strategy


class ProgressLog(pl.Callback):
    """Every ``every`` updates, one log line (so in ``log/train.log`` under nohup or a batch system, where no
    progress bar shows): the update count against ``total``, the step's losses, updates per second since the
    previous line and the time left at that rate; after each validation, its figures.

    Updates are the task's ``gen_steps`` where it counts them (GAN tasks step two optimisers per update),
    else Lightning's ``global_step``.
    """

    def __init__(self, every: int, total: int) -> None:
        self.every, self.total = max(1, every), total
        self.last: tuple[int, float] | None = None

    @staticmethod
    def _updates(trainer: pl.Trainer, task: pl.LightningModule) -> int:
        steps = getattr(task, "gen_steps", None)
        return int(steps) if steps is not None else int(trainer.global_step)

    @staticmethod
    def _figures(trainer: pl.Trainer, prefix: str) -> str:
        """Up to 8 scalars logged under ``prefix``: the total loss and the mel terms first, then by name."""
        metrics = {
            k[len(prefix) :]: float(v)
            for k, v in trainer.callback_metrics.items()
            if k.startswith(prefix) and k != f"{prefix}lr" and v.numel() == 1
        }
        names = sorted(metrics, key=lambda k: (k != "loss", "mel" not in k, k))
        return ", ".join(f"{k} {metrics[k]:.4g}" for k in names[:8])

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx) -> None:
        import time

        done = self._updates(trainer, task)
        if not trainer.is_global_zero or done % self.every:
            return
        now = time.perf_counter()
        rate = (done - self.last[0]) / (now - self.last[1]) if self.last and now > self.last[1] else None
        self.last = (done, now)
        pace = ""
        if rate:
            left = max(0, self.total - done) / rate if self.total > 0 else None
            pace = f"; {rate:.3g} updates/s" + (f", {left / 60:.1f} min left" if left is not None else "")
        total = f"/{self.total}" if self.total > 0 else ""
        log.info("update %d%s: %s%s", done, total, self._figures(trainer, "train/"), pace)

    def on_validation_end(self, trainer, task) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            log.info("validation at update %d: %s", self._updates(trainer, task), self._figures(trainer, "val/"))


def progress_bar() -> pl.Callback:
    """The progress bar Lightning would pick (rich's where rich is installed, else tqdm's), with the epoch shown
    alone: training runs over endless epochs (``max_epochs=-1``) to ``trainer.max_steps`` updates, which rich's
    bar would show as ``Epoch 1/-2``; :class:`ProgressLog` gives the updates against their total."""
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
    from pytorch_lightning.callbacks.progress.rich_progress import _RICH_AVAILABLE

    if not _RICH_AVAILABLE:
        return TQDMProgressBar()

    class EpochBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            text = f"Epoch {current_epoch}"
            return f"{text:{len(self.validation_description)}}"

    return EpochBar()


def fit(
    task: pl.LightningModule,
    train_loader,
    valid_loader,
    t: TrainerConfig,
    exp_dir,
    resume: bool,
    monitor: str,
    max_steps: int = -1,
) -> tuple[pl.Trainer, pathlib.Path]:
    """Run Lightning with best (by ``monitor``, lower is better) and last checkpoints; resume from
    ``checkpoints/last.ckpt`` with ``weights_only=True``. Returns the trainer and the best checkpoint."""
    exp = pathlib.Path(exp_dir)
    ckpt_dir = exp / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    best = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=monitor, mode="min", save_top_k=1, enable_version_counter=False
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
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=t.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=t.log_every,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=_strategy(t),
        precision=t.precision,
        default_root_dir=exp,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(exp, name="tb", version=""),
        callbacks=[best, latest, LearningRateMonitor(), ProgressLog(t.log_every, t.max_steps), progress_bar()],
        enable_model_summary=False,
    )
    trainer.fit(
        task, train_loader, valid_loader, ckpt_path=str(last) if resume and last.exists() else None, weights_only=True
    )
    trainer.save_checkpoint(last, weights_only=False)
    return trainer, pathlib.Path(best.best_model_path) if best.best_model_path else last
