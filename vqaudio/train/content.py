"""Content objectives on the codec's level 0, used in training only: the heads are not part of the exported
codec.

- ``ctc``: a light head on the level-0 quantized latents predicts the transcript's characters with CTC
  (supervised semantic tokens, as CosyVoice's S3 tokenizer and PAST train them). Utterances without text
  train on reconstruction only.
- ``kmeans``: the head predicts per-frame targets with cross-entropy, HuBERT-style (Hsu et al. 2021); the
  targets are the units of a ``train-kmeans`` model (over spectra or an SSL layer), or an earlier codec's
  level-0 units (a second iteration).
- ``distill``: the head projects level 0 to a teacher's feature width and a cosine loss pulls it toward the
  teacher's frames (SpeechTokenizer's semantic distillation of HuBERT, Mimi's of WavLM); the teacher is an SSL
  layer (or the mean of layers) or spectral features such as CMVN-spliced MFCCs (:class:`FeatureTeacher`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
from collections import Counter

import librosa
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..config import to_dict
from ..data.audio import AudioError, load_audio
from ..data.kaldi import read_data_dir, read_text, read_utt2dur
from ..errors import UserError
from ..fileio import atomic_output
from ..units.kmeans import KMeansConfig, frame_features
from ..units.ssl import SSLFeatures

log = logging.getLogger(__name__)
OBJECTIVES = ("none", "ctc", "kmeans", "distill")
# CTC vocabulary: blank, space, apostrophe, A-Z (LibriSpeech's transcript alphabet).
VOCAB = ("<blank>", " ", "'", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_CHAR_ID = {c: i for i, c in enumerate(VOCAB) if i}


def text_to_ids(text: str) -> tuple[list[int], Counter]:
    """Characters -> CTC label ids (upper-cased; runs of whitespace are one space). Characters outside the
    vocabulary are dropped and counted, so one odd transcript never stops training."""
    ids, unknown = [], Counter()
    for ch in " ".join(text.upper().split()):
        if ch in _CHAR_ID:
            ids.append(_CHAR_ID[ch])
        else:
            unknown[ch] += 1
    return ids, unknown


class ContentHead(nn.Module):
    """``(B, D, T')`` latents -> ``(B, C, T')`` logits: conv (``kernel``, odd) -> ReLU -> [BiLSTM] -> 1x1 conv.

    With ``kernel`` 1 and no LSTM each frame's logits depend on that frame's level-0 code alone, so the code
    itself must carry the frame's target; a wider kernel lets neighbouring codes share the work, and
    ``lstm`` bidirectional layers let the whole utterance do so (a recogniser's context, for ``ctc``).
    """

    def __init__(self, dim: int, classes: int, hidden: int = 256, kernel: int = 3, lstm: int = 0) -> None:
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"content head kernel must be odd and positive, got {kernel}")
        if lstm < 0:
            raise ValueError(f"content head LSTM layers must be >= 0, got {lstm}")
        layers = [nn.Conv1d(dim, hidden, kernel, padding=kernel // 2), nn.ReLU()]
        if lstm:
            layers.append(BiLSTM(hidden, hidden // 2, lstm))
        layers.append(nn.Conv1d(2 * (hidden // 2) if lstm else hidden, classes, 1))
        self.net = nn.Sequential(*layers)  # without LSTM: net.0 and net.2, as heads saved before it existed

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BiLSTM(nn.Module):
    """``(B, C, T)`` -> ``(B, 2 * hidden, T)``: a bidirectional LSTM over time."""

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(channels, hidden, layers, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.lstm(x.transpose(1, 2))[0].transpose(1, 2)


class TextUtterances(Dataset):
    """Whole utterances of a data dir that have a transcript, with their character ids: the ``ctc`` batches.

    Utterances without text, or longer than ``max_seconds`` (by ``utt2dur`` when present, else once read),
    are left out; characters outside :data:`VOCAB` are dropped and reported once. A file that cannot be
    read is replaced by another utterance, as in training crops.
    """

    def __init__(self, data_dir: str | pathlib.Path, sample_rate: int, max_seconds: float) -> None:
        texts = read_text(data_dir)
        if texts is None:
            raise UserError(
                f"{data_dir}: content objective 'ctc' needs transcripts (a text file, or supervisions with text)"
            )
        durations = read_utt2dur(data_dir)
        every = read_data_dir(data_dir)
        utts = [u for u in every if texts.get(u.utt_id, "").strip()]
        long = [u for u in utts if durations.get(u.utt_id, 0.0) > max_seconds]
        utts = [u for u in utts if durations.get(u.utt_id, 0.0) <= max_seconds]
        unknown: Counter = Counter()
        self.items = []
        for u in utts:
            ids, odd = text_to_ids(texts[u.utt_id])
            unknown.update(odd)
            if ids:
                self.items.append((u, torch.tensor(ids, dtype=torch.long)))
        if not self.items:
            raise UserError(
                f"{data_dir}: no utterance has a usable transcript of at most {max_seconds:g} s for content "
                "objective 'ctc' (text lists none, or all are longer: raise content.max_seconds)"
            )
        if unknown:
            log.warning("ctc: characters outside the vocabulary were dropped: %s", dict(unknown.most_common(20)))
        log.info(
            "ctc: %d utterances with text (%d without text, %d over %g s left to reconstruction only)",
            len(self.items),
            len(every) - len(utts) - len(long),
            len(long),
            max_seconds,
        )
        self.sample_rate, self.max_seconds = sample_rate, max_seconds

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        for attempt in range(10):
            u, ids = self.items[index if attempt == 0 else int(torch.randint(0, len(self.items), ()))]
            try:
                wav = load_audio(u.source, self.sample_rate, u.start, u.end, name=u.utt_id)
            except AudioError as err:
                log.warning("ctc: skipping %s: %s", u.utt_id, err)
                continue
            if wav.shape[0] <= self.max_seconds * self.sample_rate:
                return torch.from_numpy(wav), ids
        raise UserError("ctc: 10 transcribed files in a row could not be read or were too long")


def collate_text(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> padded waveforms ``(B, 1, T)``, their lengths, concatenated targets and target lengths."""
    wavs = nn.utils.rnn.pad_sequence([w for w, _ in batch], batch_first=True)[:, None]
    lengths = torch.tensor([w.shape[0] for w, _ in batch])
    return wavs, lengths, torch.cat([t for _, t in batch]), torch.tensor([t.shape[0] for _, t in batch])


def ctc_loss(logits: Tensor, lengths: Tensor, targets: Tensor, target_lengths: Tensor, hop: int) -> Tensor:
    """CTC of ``(B, V, T')`` logits against character targets; frames past each waveform's end are ignored."""
    frames = torch.clamp(torch.div(lengths + hop - 1, hop, rounding_mode="floor"), max=logits.shape[-1])
    logp = logits.float().log_softmax(1).permute(2, 0, 1)  # (T', B, V)
    return F.ctc_loss(logp, targets, frames, target_lengths, blank=0, zero_infinity=True)


class TeacherTargets:
    """A teacher unit model (a k-means model or a codec) as the ``frame_targets`` of a
    :class:`~vqaudio.data.CropDataset`: ``(T,)`` samples of a whole utterance -> its ``(T',)`` level-0 units.
    Whole utterances, so a teacher that normalises over its input (``cmvn``) sees what ``extract-units`` sees."""

    def __init__(self, teacher) -> None:
        self.teacher = teacher

    def __call__(self, wav) -> Tensor:
        with torch.no_grad():
            return self.teacher.encode(torch.as_tensor(wav, dtype=torch.float32)[None, None])[0, 0]


def load_teacher(path: str | None, sample_rate: int, hop_length: int):
    """The unit model at ``path`` (eval mode, CPU), checked to have the codec's sample rate and hop."""
    from ..units.model import load_unit_model

    if not path:
        raise UserError("content.objective 'kmeans' needs content.targets: a train-kmeans model or a codec")
    teacher = load_unit_model(path).eval()
    check_teacher(teacher, sample_rate, hop_length, path)
    return teacher


def check_teacher(teacher, sample_rate: int, hop_length: int, path) -> None:
    if teacher.sample_rate != sample_rate or teacher.hop_length != hop_length:
        raise UserError(
            f"{path}: content targets at {teacher.sample_rate} Hz, hop {teacher.hop_length} do not match the codec "
            f"({sample_rate} Hz, hop {hop_length}); train the k-means model with the codec's frame rate"
        )


DISTILL_FORMS = ("frame", "dim")


def check_frame_rates(teacher_rate: float, codec_rate: float) -> float:
    """The teacher's frames per codec frame; a teacher coarser than the codec is refused: it has no frame of its
    own for every codec frame."""
    ratio = teacher_rate / codec_rate
    if ratio < 1 - 1e-9:
        raise UserError(
            f"the teacher's {teacher_rate:g} frames/s are coarser than the codec's {codec_rate:g}: distil from a "
            "teacher with at least the codec's frame rate"
        )
    return ratio


def align_frames(feats: Tensor, teacher_rate: float, codec_rate: float, frames: int) -> Tensor:
    """``(n, D)`` teacher frames at ``teacher_rate`` per second -> ``(frames, D)`` at the codec's ``codec_rate``,
    frame ``j`` centred on ``(j + 1/2) / codec_rate`` s: the same rate is taken as it is; an integer ratio
    ``r`` averages frames ``j r .. j r + r - 1`` (whose centres average to the codec frame's); any other ratio
    interpolates linearly at the codec frames' centres. Past the teacher's last frame the last one repeats.
    A teacher coarser than the codec is refused (:func:`check_frame_rates`)."""
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"expected (frames >= 1, D) teacher features, got {tuple(feats.shape)}")
    ratio = check_frame_rates(teacher_rate, codec_rate)
    r = round(ratio)
    if abs(ratio - r) < 1e-9:
        need = frames * r
        if feats.shape[0] < need:
            feats = torch.cat([feats, feats[-1:].expand(need - feats.shape[0], -1)])
        return feats[:need].reshape(frames, r, -1).mean(1)
    pos = ((torch.arange(frames, dtype=torch.float64) + 0.5) * ratio - 0.5).clamp(0, feats.shape[0] - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(feats.shape[0] - 1)
    w = (pos - lo).to(feats.dtype)[:, None]
    return feats[lo] * (1 - w) + feats[hi] * w


class FeatureTeacher:
    """The ``distill`` objective's teacher: frame features of a whole utterance at the codec's frames, as the
    ``frame_targets`` of a :class:`~vqaudio.data.CropDataset` (``(T,)`` samples at the codec's rate ->
    ``(ceil(T / hop), D)`` float32).

    Args:
        source: ``"mfcc"`` or ``"logmel"`` (spectral features at the codec's own frames, with ``deltas``,
            ``cmvn`` and ``context`` as ``train-kmeans`` computes them), or an SSL model folder or Hub id whose
            ``layers`` (averaged when several) are the features, resampled and aligned to the codec's frames
            (:func:`align_frames`).
        sample_rate, hop_length: the codec's.
        cache_dir: features are computed once per utterance and kept here as float16 ``.npy`` files, under a
            folder named by the teacher's identity (weights sha256 and settings) and a file named by the
            audio's sha1, so another teacher or changed audio never reads a stale entry.
    """

    def __init__(
        self,
        source: str,
        sample_rate: int,
        hop_length: int,
        layers: list[int] | None = None,
        deltas: bool = False,
        cmvn: bool = True,
        context: int = 2,
        cache_dir: str | pathlib.Path | None = None,
    ) -> None:
        self.sample_rate, self.hop_length = sample_rate, hop_length
        self.ssl = self.spectral = None
        if source in ("mfcc", "logmel"):
            self.spectral = KMeansConfig(
                feature=source,
                sample_rate=sample_rate,
                frame_rate=sample_rate / hop_length,
                deltas=deltas,
                cmvn=cmvn,
                context=context,
            ).check()
            self.dim = self.spectral.dim
            identity = {"spectral": to_dict(self.spectral)}
        else:
            self.ssl = SSLFeatures(source, [6] if layers is None else list(layers))  # [] is refused there
            ref = self.ssl.reference
            self.dim = ref.dim
            check_frame_rates(ref.sample_rate / ref.hop_length, sample_rate / hop_length)
            identity = {"ssl": ref.sha256, "layers": ref.layer, "normalize": ref.normalize}
        self.id = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        self.cache = pathlib.Path(cache_dir) / self.id[:16] if cache_dir else None
        log.info("distill teacher %s: %d-d features, id %s...", source, self.dim, self.id[:12])

    def compute(self, wav) -> Tensor:
        """``(T,)`` float32 samples at the codec's rate -> ``(ceil(T / hop), D)`` float32 features."""
        wav = np.asarray(wav, dtype=np.float32)
        frames = max(1, -(-wav.shape[0] // self.hop_length))
        if self.spectral is not None:
            return torch.from_numpy(frame_features(wav, self.spectral))
        ref = self.ssl.reference
        if ref.sample_rate != self.sample_rate:
            wav = librosa.resample(wav, orig_sr=self.sample_rate, target_sr=ref.sample_rate, res_type="soxr_hq")
        feats = self.ssl.features(wav)
        return align_frames(feats, ref.sample_rate / ref.hop_length, self.sample_rate / self.hop_length, frames)

    def __call__(self, wav) -> Tensor:
        if self.cache is None:
            return self.compute(wav)
        wav = np.ascontiguousarray(wav, dtype=np.float32)
        path = self.cache / f"{hashlib.sha1(wav.tobytes()).hexdigest()}.npy"
        if path.is_file():
            return torch.from_numpy(np.load(path).astype(np.float32))
        feats = self.compute(wav).numpy().astype(np.float16)  # as every later read returns them
        self.cache.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            np.save(f, feats)
        return torch.from_numpy(feats.astype(np.float32))


def distill_loss(pred: Tensor, target: Tensor, form: str = "frame") -> Tensor:
    """Cosine distillation of ``(B, D, T)`` projected level-0 latents toward ``(B, T', D)`` teacher frames (NaN
    past each utterance's end, ignored; ``T'`` may differ from ``T`` by the crop's rounding).

    ``"frame"``: mean over frames of ``1 - cos`` between the two D-vectors of a frame (Mimi's distillation).
    ``"dim"``: SpeechTokenizer's D-axis loss, ``-mean_d log sigmoid(cos_d)`` with ``cos_d`` the cosine between
    dimension ``d``'s two time series over the valid frames of each utterance.
    """
    if form not in DISTILL_FORMS:
        raise UserError(f"content.distill_form must be one of {DISTILL_FORMS}, got {form!r}")
    frames = min(pred.shape[-1], target.shape[1])
    p = pred[..., :frames].float().transpose(1, 2)  # (B, T, D)
    t = target[:, :frames].float()
    valid = torch.isfinite(t).all(-1)  # (B, T)
    t = torch.where(valid[..., None], t, torch.zeros_like(t))
    if form == "frame":
        cos = F.cosine_similarity(p, t, dim=-1, eps=1e-8)
        return ((1 - cos) * valid).sum() / valid.sum().clamp_min(1)
    p = p * valid[..., None]
    cos = (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1)).clamp_min(1e-8)  # (B, D)
    return -F.logsigmoid(cos).mean()
