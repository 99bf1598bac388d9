"""``train_prior``: the WaveNet prior training job over unit dirs written by ``vqaudio extract-units``."""

from __future__ import annotations

import logging
import pathlib

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..config import to_dict
from ..models.wavenet import WaveNetPrior
from ..units.formats import read_info, read_levels
from .config import TrainPriorConfig
from .experiment import fit, prepare_experiment
from .prior_task import IGNORE, PriorTask

log = logging.getLogger(__name__)


class UnitCrops(Dataset):
    """Random crops of ``segment_frames`` from each utterance's units ``(Q, T)``; shorter ones padded with
    ``IGNORE``. ``segment_frames=None`` returns whole utterances (validation, batch size 1)."""

    def __init__(self, units_dir, levels: int | None, segment_frames: int | None) -> None:
        table = read_levels(units_dir, levels)
        self.seqs = [torch.tensor(codes, dtype=torch.long) for _, codes in sorted(table.items())]
        self.seqs = [s for s in self.seqs if s.shape[1] > 0]
        if not self.seqs:
            raise ValueError(f"{units_dir}: no non-empty unit sequences")
        self.segment = segment_frames

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int) -> torch.Tensor:
        seq = self.seqs[i]
        if self.segment is None:
            return seq
        n = self.segment
        if seq.shape[1] > n:
            start = int(torch.randint(0, seq.shape[1] - n + 1, ()))
            return seq[:, start : start + n]
        return torch.cat([seq, torch.full((seq.shape[0], n - seq.shape[1]), IGNORE)], dim=1)


def train_prior(
    config, train_units, valid_units, exp_dir, resume: bool = False, overrides: dict | None = None
) -> pathlib.Path:
    """Train a prior; writes ``prior.pt`` (best ``val/nll_bits``) into ``exp_dir`` and returns its path."""
    cfg = prepare_experiment(TrainPriorConfig, config, exp_dir, resume, overrides, "prior")
    exp = pathlib.Path(exp_dir)
    info = read_info(train_units)
    if info.dedup:
        log.warning("%s holds deduplicated units: sampled units will lack durations", train_units)
    levels = cfg.data.levels or info.levels
    train = UnitCrops(train_units, levels, cfg.data.segment_frames)
    valid = UnitCrops(valid_units, levels, None)
    sampler = RandomSampler(train, replacement=True, num_samples=cfg.data.batch_size * 200)
    train_loader = DataLoader(train, cfg.data.batch_size, sampler=sampler, drop_last=True)
    valid_loader = DataLoader(valid, 1)
    task = PriorTask(to_dict(cfg), info.codebook_size, levels)
    trainer, best = fit(
        task, train_loader, valid_loader, cfg.trainer, exp, resume, "val/nll_bits", max_steps=cfg.trainer.max_steps
    )
    out = exp / "prior.pt"
    if trainer.is_global_zero:
        payload = torch.load(best, map_location="cpu", weights_only=True)
        task.load_state_dict(payload["state_dict"])
        task.prior.save_pretrained(out)
        log.info("exported %s from %s", out, best.name)
    return out


def load_prior(path) -> WaveNetPrior:
    """A prior from ``prior.pt`` or an experiment dir holding one."""
    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "prior.pt"
    if not path.is_file():
        raise ValueError(f"no prior at {path}: run `vqaudio train-prior` first")
    return WaveNetPrior.from_pretrained(path)
