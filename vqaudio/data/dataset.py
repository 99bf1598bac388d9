"""Training data: random fixed-length crops of the utterances of a Kaldi data dir."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .audio import AudioError, load_audio
from .kaldi import read_data_dir

log = logging.getLogger(__name__)


class CropDataset(Dataset):
    """Random crops of ``segment_samples`` from each utterance (zero-padded when shorter).

    A file that cannot be read is logged and replaced by another utterance, so one bad file never
    stops training; if every retry fails the error names the files.

    Args:
        data_dir: Kaldi data dir with ``wav.scp`` (and optional ``segments``).
        sample_rate: model rate; other rates are resampled on the fly, multi-channel downmixed.
        segment_samples: crop length; ``None`` returns whole utterances (validation, batch size 1).
        max_retries: other utterances tried before giving up on a batch item.
    """

    def __init__(
        self, data_dir: str | pathlib.Path, sample_rate: int, segment_samples: int | None, max_retries: int = 10
    ) -> None:
        self.utts = read_data_dir(data_dir)
        if not self.utts:
            raise UserError(f"{data_dir}: wav.scp lists no utterances")
        self.sample_rate = sample_rate
        self.segment_samples = segment_samples
        self.max_retries = max_retries

    def __len__(self) -> int:
        return len(self.utts)

    def _load(self, index: int) -> np.ndarray:
        u = self.utts[index]
        return load_audio(u.source, self.sample_rate, u.start, u.end, name=u.utt_id)

    def __getitem__(self, index: int) -> torch.Tensor:
        errors = []
        for attempt in range(self.max_retries):
            i = index if attempt == 0 else int(torch.randint(0, len(self.utts), ()))
            try:
                wav = self._load(i)
                break
            except AudioError as err:
                log.warning("skipping %s: %s", self.utts[i].utt_id, err)
                errors.append(str(err))
        else:
            raise AudioError(f"{self.max_retries} unreadable files in a row: " + "; ".join(errors))
        if self.segment_samples is None:
            return torch.from_numpy(wav)[None]
        n = self.segment_samples
        if wav.shape[0] > n:
            start = int(torch.randint(0, wav.shape[0] - n + 1, ()))
            wav = wav[start : start + n]
        elif wav.shape[0] < n:
            wav = np.pad(wav, (0, n - wav.shape[0]))
        return torch.from_numpy(wav)[None]
