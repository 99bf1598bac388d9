"""``train_prior``: the WaveNet prior training job over unit dirs written by ``vqaudio extract-units``."""

from __future__ import annotations

import logging
import pathlib

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..config import to_dict
from ..data.kaldi import speakers_of
from ..errors import UserError
from ..models.wavenet import WaveNetPrior
from ..units.formats import read_info, read_levels
from .config import TrainPriorConfig
from .experiment import fit, prepare_experiment
from .prior_task import IGNORE, PriorTask

log = logging.getLogger(__name__)
UNSEEN = "<unseen>"  # speaker id 0: any speaker not seen in training


class UnitCrops(Dataset):
    """``(units (Q, T), speaker id)`` items: random crops of ``segment_frames`` from each utterance, shorter
    ones padded with ``IGNORE``; ``segment_frames=None`` returns whole utterances (validation, batch size 1).

    Args:
        speakers: look up each utterance's speaker (:func:`~vqaudio.data.kaldi.speakers_of` with
            ``utt2spk`` and ``strict``); ``speaker_names`` then lists them. Ids come from ``speaker_ids``
            (name -> id, set by the caller); a name not in it, or no speaker lookup, gives id 0 (unseen).
    """

    def __init__(
        self,
        units_dir,
        n_q: int | None,
        segment_frames: int | None,
        speakers: bool = False,
        utt2spk=None,
        strict: bool = True,
    ) -> None:
        table = read_levels(units_dir, n_q)
        names = speakers_of(table, utt2spk, strict) if speakers else {}
        self.speaker_names = sorted(set(names.values()))
        self.speaker_ids: dict[str, int] = {}
        items = [(torch.tensor(codes, dtype=torch.long), utt) for utt, codes in sorted(table.items())]
        self.items = [(seq, names.get(utt)) for seq, utt in items if seq.shape[1] > 0]
        if not self.items:
            raise UserError(f"{units_dir}: no non-empty unit sequences")
        self.segment = segment_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        seq, name = self.items[i]
        speaker = self.speaker_ids.get(name, 0)
        if self.segment is None:
            return seq, speaker
        n = self.segment
        if seq.shape[1] > n:
            start = int(torch.randint(0, seq.shape[1] - n + 1, ()))
            return seq[:, start : start + n], speaker
        return torch.cat([seq, torch.full((seq.shape[0], n - seq.shape[1]), IGNORE)], dim=1), speaker


def train_prior(
    config,
    train_units,
    valid_units,
    exp_dir,
    resume: bool = False,
    overrides: dict | None = None,
    utt2spk=None,
    data_overrides: dict | None = None,
    allow_config_change: bool = False,
    any_model: bool = False,
) -> pathlib.Path:
    """Train a prior; writes ``prior.pt`` (best ``val/nll_bits``) into ``exp_dir`` and returns its path.

    Args:
        overrides: trainer fields to override; data_overrides: data fields, e.g. ``{"speakers": True}``.
        utt2spk: Kaldi ``utt2spk`` covering the training (and validation) utterances, for
            ``data.speakers``; without it speakers come from the ids' prefixes.
        any_model: train on validation units of another unit model than the training units (refused
            otherwise: the prior would be scored on units it does not model).
    """
    exp = pathlib.Path(exp_dir)
    out = exp / "prior.pt"
    if out.exists() and not resume:
        raise UserError(f"{out} exists; pass --resume to continue that experiment or choose another --exp-dir")
    info = read_info(train_units)
    valid_info = read_info(valid_units)
    if valid_info.model_checksum != info.model_checksum and not any_model:
        raise UserError(
            f"{valid_units} holds units of another model than {train_units} (checksum "
            f"{valid_info.model_checksum[:12]}... against {info.model_checksum[:12]}...); "
            "pass --any-model to train anyway"
        )
    if valid_info.codebook_size > info.codebook_size:
        raise UserError(
            f"{valid_units}: codebook size {valid_info.codebook_size} is larger than the training units' "
            f"({info.codebook_size})"
        )
    overrides = {**(overrides or {}), **{f"data.{k}": v for k, v in (data_overrides or {}).items()}}
    cfg = prepare_experiment(TrainPriorConfig, config, exp_dir, resume, overrides, "prior", allow_config_change)
    if info.dedup:
        log.warning("%s holds deduplicated units: sampled units will lack durations", train_units)
    n_q = cfg.data.n_q or info.n_q
    train = UnitCrops(train_units, n_q, cfg.data.segment_frames, cfg.data.speakers, utt2spk)
    valid = UnitCrops(valid_units, n_q, None, cfg.data.speakers, utt2spk, strict=False)  # unseen speakers: id 0
    speakers = []
    if cfg.data.speakers:
        speakers = [UNSEEN, *train.speaker_names]
        train.speaker_ids = valid.speaker_ids = {name: i for i, name in enumerate(speakers)}
        log.info("conditioning on %d training speakers (id 0: unseen speakers)", len(train.speaker_names))
    sampler = RandomSampler(train, replacement=True, num_samples=cfg.data.batch_size * 200)
    train_loader = DataLoader(train, cfg.data.batch_size, sampler=sampler, drop_last=True)
    valid_loader = DataLoader(valid, 1)
    task = PriorTask(to_dict(cfg), info.codebook_size, n_q, speakers, unit_model=info.model_checksum)
    trainer, best = fit(
        task, train_loader, valid_loader, cfg.trainer, exp, resume, "val/nll_bits", max_steps=cfg.trainer.max_steps
    )
    if trainer.is_global_zero:
        payload = torch.load(best, map_location="cpu", weights_only=True)
        task.load_state_dict(payload["state_dict"])
        task.prior.save_pretrained(out, overwrite=True)  # refused above unless resuming this experiment
        log.info("exported %s from %s", out, best.name)
    return out


def load_prior(path) -> WaveNetPrior:
    """A prior from ``prior.pt``, a model folder, or an experiment dir holding ``prior.pt``."""
    path = pathlib.Path(path)
    if path.is_dir() and (path / "prior.pt").is_file():
        path = path / "prior.pt"
    if not path.exists():
        raise UserError(f"no prior at {path}: run `vqaudio train-prior` first")
    return WaveNetPrior.from_pretrained(path)
