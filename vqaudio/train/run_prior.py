"""``train_prior``: the WaveNet prior training job over unit dirs written by ``vqaudio extract-units``."""

from __future__ import annotations

import logging
import pathlib

import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from ..config import to_dict
from ..data.kaldi import read_table
from ..errors import UserError
from ..models.wavenet import WaveNetPrior
from ..units.formats import read_info, read_levels
from .config import TrainPriorConfig
from .experiment import fit, prepare_experiment
from .prior_task import IGNORE, PriorTask

log = logging.getLogger(__name__)
UNSEEN = "<unseen>"  # speaker id 0: any speaker not seen in training


def speaker_of(utts, utt2spk: str | pathlib.Path | None = None, strict: bool = True) -> dict[str, str]:
    """The speaker of each utterance: from a Kaldi ``utt2spk`` file, else the id's prefix before its first
    ``-`` (LibriSpeech ``spk-chapter-utt``). With ``strict``, utterances missing from ``utt2spk`` are an
    error naming one; otherwise they fall back to the prefix."""
    table = read_table(utt2spk) if utt2spk is not None else {}
    missing = [u for u in utts if u not in table]
    if utt2spk is not None and strict and missing:
        raise UserError(f"{utt2spk}: no speaker for {len(missing)} utterance(s) of the units, e.g. {missing[0]!r}")
    return {u: table[u].split()[0] if u in table else u.split("-", 1)[0] for u in utts}


class UnitCrops(Dataset):
    """``(units (Q, T), speaker id)`` items: random crops of ``segment_frames`` from each utterance, shorter
    ones padded with ``IGNORE``; ``segment_frames=None`` returns whole utterances (validation, batch size 1).

    Args:
        speaker_ids: speaker name -> id; names not in it get id 0 (unseen). ``None``: every id is 0.
    """

    def __init__(
        self,
        units_dir,
        n_q: int | None,
        segment_frames: int | None,
        speaker_ids: dict[str, int] | None = None,
        utt2spk=None,
        strict: bool = True,
    ) -> None:
        table = read_levels(units_dir, n_q)
        spk = speaker_of(table, utt2spk, strict) if speaker_ids is not None else {}
        items = [(torch.tensor(codes, dtype=torch.long), utt) for utt, codes in sorted(table.items())]
        self.items = [(seq, (speaker_ids or {}).get(spk.get(utt), 0)) for seq, utt in items if seq.shape[1] > 0]
        if not self.items:
            raise UserError(f"{units_dir}: no non-empty unit sequences")
        self.segment = segment_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        seq, speaker = self.items[i]
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
) -> pathlib.Path:
    """Train a prior; writes ``prior.pt`` (best ``val/nll_bits``) into ``exp_dir`` and returns its path.

    Args:
        overrides: trainer fields to override; data_overrides: data fields, e.g. ``{"speakers": True}``.
        utt2spk: Kaldi ``utt2spk`` covering the training (and validation) utterances, for
            ``data.speakers``; without it speakers come from the ids' prefixes.
    """
    overrides = {**(overrides or {}), **{f"data.{k}": v for k, v in (data_overrides or {}).items()}}
    cfg = prepare_experiment(TrainPriorConfig, config, exp_dir, resume, overrides, "prior", allow_config_change)
    exp = pathlib.Path(exp_dir)
    info = read_info(train_units)
    if info.dedup:
        log.warning("%s holds deduplicated units: sampled units will lack durations", train_units)
    n_q = cfg.data.n_q or info.n_q
    speakers, speaker_ids = [], None
    if cfg.data.speakers:
        names = sorted(set(speaker_of(read_levels(train_units, 1), utt2spk).values()))
        speakers = [UNSEEN, *names]
        speaker_ids = {name: i for i, name in enumerate(speakers)}
        log.info("conditioning on %d training speakers (id 0: unseen speakers)", len(names))
    train = UnitCrops(train_units, n_q, cfg.data.segment_frames, speaker_ids, utt2spk)
    valid = UnitCrops(valid_units, n_q, None, speaker_ids, utt2spk, strict=False)  # unseen speakers get id 0
    sampler = RandomSampler(train, replacement=True, num_samples=cfg.data.batch_size * 200)
    train_loader = DataLoader(train, cfg.data.batch_size, sampler=sampler, drop_last=True)
    valid_loader = DataLoader(valid, 1)
    task = PriorTask(to_dict(cfg), info.codebook_size, n_q, speakers)
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
        raise UserError(f"no prior at {path}: run `vqaudio train-prior` first")
    return WaveNetPrior.from_pretrained(path)
