"""Training data: random fixed-length crops of the utterances of a Kaldi data dir or a lhotse cut manifest."""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .audio import AudioError, load_audio
from .kaldi import read_data_dir

log = logging.getLogger(__name__)
IGNORE = -100  # target of frames past an utterance's end (cross-entropy's default ignore_index)


class CropDataset(Dataset):
    """Random crops of ``segment_samples`` from each utterance (zero-padded when shorter).

    A file that cannot be read is reported once, marked bad and never tried again, and a random readable
    utterance takes its place, so bad files never stop training. The marks live in shared memory, so
    DataLoader workers share them. Training stops, with a message naming a bad file, only when more than
    ``max_bad_fraction`` of the utterances are known to be unreadable.

    Args:
        data_dir: Kaldi data dir with ``wav.scp`` (and optional ``segments``), or a lhotse cut manifest.
        sample_rate: model rate; other rates are resampled on the fly, multi-channel downmixed.
        segment_samples: crop length; ``None`` returns whole utterances (validation, batch size 1).
        max_bad_fraction: share of unreadable utterances at which the data dir is refused.
        frame_targets: with ``hop``, per-frame targets of a whole utterance, ``(T,)`` samples -> ``(ceil(T / hop),)``
            integers (a teacher's units) or ``(ceil(T / hop), D)`` floats (a teacher's features). Items are then
            dicts: ``wav`` cropped at a multiple of ``hop`` and ``targets``, the ``ceil(segment_samples / hop)``
            targets of the crop's frames, ``IGNORE`` (units) or NaN (features) past the utterance's end.
            Computed once per utterance, from all of its audio, not from the crop.
        hop: samples per frame of ``frame_targets``.
    """

    def __init__(
        self,
        data_dir: str | pathlib.Path,
        sample_rate: int,
        segment_samples: int | None,
        max_bad_fraction: float = 0.9,
        frame_targets: Callable[[np.ndarray], torch.Tensor] | None = None,
        hop: int = 1,
    ) -> None:
        if frame_targets is not None and (segment_samples is None or hop < 1):
            raise ValueError(f"frame_targets need crops and a hop >= 1, got {segment_samples} samples, hop {hop}")
        self.frame_targets, self.hop = frame_targets, hop
        self._targets: dict[int, torch.Tensor] = {}  # utterance index -> its targets (per DataLoader worker)
        self.data_dir = data_dir
        self.utts = read_data_dir(data_dir)
        if not self.utts:
            raise UserError(f"{data_dir}: lists no utterances")
        self.sample_rate = sample_rate
        self.segment_samples = segment_samples
        self.max_bad_fraction = max_bad_fraction
        self.bad = torch.zeros(len(self.utts), dtype=torch.bool).share_memory_()

    def select(self, utts: list) -> None:
        """Use only ``utts`` (e.g. a validation subset); forgets which files were found bad."""
        self.utts = list(utts)
        self.bad = torch.zeros(len(self.utts), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.utts)

    def _load(self, index: int) -> np.ndarray:
        u = self.utts[index]
        return load_audio(u.source, self.sample_rate, u.start, u.end, name=u.utt_id)

    def _read_any(self, index: int) -> tuple[int, np.ndarray]:
        """``(i, audio)`` of utterance ``i`` = ``index``, or of a random readable one when it is (or turns
        out) bad."""
        i = index
        while True:
            if not bool(self.bad[i]):
                try:
                    return i, self._load(i)
                except AudioError as err:
                    self.bad[i] = True
                    num_bad = int(self.bad.sum())
                    utt = self.utts[i].utt_id
                    log.warning("dropping %s from training (%d unreadable so far): %s", utt, num_bad, err)
                    if num_bad > self.max_bad_fraction * len(self.utts) or num_bad == len(self.utts):
                        raise AudioError(
                            f"{self.data_dir}: {num_bad} of {len(self.utts)} utterances are unreadable, too few "
                            f"remain to train on (last: {err}); fix the data dir"
                        ) from None
            readable = (~self.bad).nonzero()[:, 0]
            i = int(readable[int(torch.randint(0, len(readable), ()))])

    def __getitem__(self, index: int) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.frame_targets is not None:
            return self._with_targets(index)
        _, wav = self._read_any(index)
        if self.segment_samples is None:
            return torch.from_numpy(wav)[None]
        n = self.segment_samples
        if wav.shape[0] > n:
            start = int(torch.randint(0, wav.shape[0] - n + 1, ()))
            wav = wav[start : start + n]
        elif wav.shape[0] < n:
            wav = np.pad(wav, (0, n - wav.shape[0]))
        return torch.from_numpy(wav)[None]

    def _with_targets(self, index: int) -> dict[str, torch.Tensor]:
        i, wav = self._read_any(index)
        if i not in self._targets:
            targets = self.frame_targets(wav)
            self._targets[i] = targets if targets.is_floating_point() else targets.to(torch.int32)
        targets = self._targets[i]
        n, hop = self.segment_samples, self.hop
        frames = -(-n // hop)
        first = int(torch.randint(0, (wav.shape[0] - n) // hop + 1, ())) if wav.shape[0] > n else 0
        crop = wav[first * hop : first * hop + n]
        crop = np.pad(crop, (0, n - crop.shape[0]))
        if targets.is_floating_point():
            out = torch.full((frames, *targets.shape[1:]), float("nan"), dtype=torch.float32)
        else:
            out = torch.full((frames,), IGNORE, dtype=torch.long)
        kept = targets[first : first + frames]
        out[: kept.shape[0]] = kept
        return {"wav": torch.from_numpy(crop)[None], "targets": out}
