"""``train_vocoder``: the ``vqaudio train-vocoder`` job (units + audio, Lightning trainer, checkpoints, export)."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from ..checkpoint import model_checksum, same_model
from ..config import from_dict, save_yaml, to_dict
from ..data.audio import AudioError, load_audio
from ..data.kaldi import Utterance, read_data_dir, read_utt2spk, speakers_of
from ..errors import UserError
from ..models.codec import Codec
from ..models.vocoder import (
    NO_SPEAKER,
    F0Cache,
    Vocoder,
    VocoderConfig,
    check_unit_model,
    decoder_fields,
    f0_stats,
    ge2e_encoder,
    quantize_f0,
    read_embeddings,
    write_embeddings,
)
from ..scoring.speaker import mean_embedding
from ..units.model import load_unit_model
from ..units.resynth import load_unit_set
from .config import TrainVocoderConfig
from .experiment import fit, prepare_experiment
from .vocoder_task import VocoderTask

log = logging.getLogger(__name__)
BATCHES_PER_EPOCH = 200


@dataclass
class Example:
    """One utterance to train or validate on: its units ``(S, T')``, audio, speaker and F0 bins ``(T',)``."""

    utt: str
    units: torch.Tensor
    audio: Utterance
    speaker: str
    f0: torch.Tensor | None = None


def read_units(
    units: str | pathlib.Path, levels: list[int], unit_model: str | pathlib.Path, checksum: str, vocabulary: int
) -> dict[str, torch.Tensor]:
    """``{utt: (S, T') int64}``, the ``levels`` of a units dir (or ``.km``) made by ``unit_model``; units of
    another unit model (by ``units.json``) or outside ``[0, vocabulary)`` are a :class:`UserError`."""
    table, info = load_unit_set(units, max(levels) + 1)
    if info is None:
        raise UserError(f"{units}: no units.json beside it says which unit model made these units")
    if info.model_checksum != checksum and not same_model(info.model_checksum, unit_model):
        raise UserError(
            f"{units} were made by another unit model (checksum {info.model_checksum[:12]}... in units.json; "
            f"{unit_model} is {checksum[:12]}...)"
        )
    if not table:
        raise UserError(f"{units}: no utterances")
    written = len(next(iter(table.values()))[0])
    if max(levels) >= written:
        raise UserError(f"{units}: holds {written} level(s) of units; levels {levels} asked for")
    out = {}
    for utt, (codes, _) in table.items():
        x = torch.tensor([codes[q] for q in levels], dtype=torch.long)
        if x.shape[1] == 0:
            raise UserError(f"{units}: utterance {utt!r} has no units")
        if int(x.min()) < 0 or int(x.max()) >= vocabulary:
            bad = int(x.min()) if int(x.min()) < 0 else int(x.max())
            raise UserError(f"{units}: utterance {utt!r} has unit {bad}, outside the vocabulary [0, {vocabulary - 1}]")
        out[utt] = x
    return out


class VocoderCrops(Dataset):
    """Items for :class:`VocoderTask`: random crops of ``segment_frames`` unit frames and the audio under them
    (``segment_frames * hop`` samples from sample ``first_frame * hop``); ``segment_frames=None`` gives whole
    utterances cut to ``max_frames`` (validation, batch size 1). Shorter utterances are padded (units with their
    last unit, audio with zeros, F0 as unvoiced).

    Args:
        cache_mb: decoded audio kept in memory (per process: each DataLoader worker has its own cache).
        speaker: the vocoder's speaker mode; ``speaker_ids`` (table: name -> index, an unknown name is ``NO_SPEAKER``),
            ``embeddings`` (external: utterance or speaker -> vector), ``reference_samples`` (reference: crop
            length of another utterance of the same speaker).
    """

    def __init__(
        self,
        examples: list[Example],
        sample_rate: int,
        hop: int,
        segment_frames: int | None,
        speaker: str,
        speaker_ids: dict[str, int] | None = None,
        embeddings: dict[str, np.ndarray] | None = None,
        reference_samples: int = 0,
        max_frames: int | None = None,
        cache_mb: float = 0.0,
    ) -> None:
        self.examples, self.sample_rate, self.hop = examples, sample_rate, hop
        self.segment, self.max_frames = segment_frames, max_frames
        self.speaker, self.speaker_ids, self.embeddings = speaker, speaker_ids or {}, embeddings or {}
        self.reference_samples = reference_samples
        self.cache_bytes = int(cache_mb * 2**20)
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()  # per DataLoader worker: each has its copy
        self.by_speaker: dict[str, list[int]] = {}
        for i, ex in enumerate(examples):
            self.by_speaker.setdefault(ex.speaker, []).append(i)

    def __len__(self) -> int:
        return len(self.examples)

    def _audio(self, ex: Example) -> np.ndarray:
        """The utterance's decoded audio, from the cache when it is there (least recently used out first)."""
        wav = self.cache.get(ex.utt)
        if wav is not None:
            self.cache.move_to_end(ex.utt)
            return wav
        u = ex.audio
        wav = load_audio(u.source, self.sample_rate, u.start, u.end, name=u.utt_id)
        if wav.nbytes <= self.cache_bytes:
            self.cache[ex.utt] = wav
            held = sum(w.nbytes for w in self.cache.values())
            while held > self.cache_bytes:
                held -= self.cache.popitem(last=False)[1].nbytes
        return wav

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ex = self.examples[index]
        total = ex.units.shape[1]
        if self.segment is None:
            first, frames = 0, min(total, self.max_frames or total)
        else:
            frames = self.segment
            first = int(torch.randint(0, total - frames + 1, ())) if total > frames else 0
        hop = self.hop
        wav = self._audio(ex)[first * hop : (first + frames) * hop]
        units = ex.units[:, first : first + frames]
        pad = frames - units.shape[1]
        item = {
            "units": torch.cat([units, units[:, -1:].expand(-1, pad)], dim=1),
            "wav": torch.from_numpy(np.pad(wav, (0, frames * hop - wav.shape[0])))[None],
        }
        if ex.f0 is not None:
            item["f0"] = torch.nn.functional.pad(ex.f0[first : first + frames], (0, pad))
        if self.speaker == "table":
            item["speaker"] = torch.tensor(self.speaker_ids.get(ex.speaker, NO_SPEAKER))
        elif self.speaker == "external":
            item["speaker"] = torch.from_numpy(self.embeddings.get(ex.utt, self.embeddings.get(ex.speaker)))
        elif self.speaker == "reference":
            item["speaker"] = self._reference(index, ex, item["wav"])
        return item

    def _reference(self, index: int, ex: Example, own: torch.Tensor) -> torch.Tensor:
        """Validation: the utterance itself; training: a random crop of another utterance of the same speaker
        (the same one when the speaker has no other), so the encoder learns the voice, not the content."""
        if self.segment is None:
            return own
        others = [i for i in self.by_speaker[ex.speaker] if i != index] or [index]
        other = self._audio(self.examples[others[int(torch.randint(0, len(others), ()))]])
        n = self.reference_samples
        start = int(torch.randint(0, other.shape[0] - n + 1, ())) if other.shape[0] > n else 0
        crop = other[start : start + n]
        return torch.from_numpy(np.pad(crop, (0, n - crop.shape[0])))[None]


class AudioPass:
    """What one read of each utterance's audio gives besides the check of its length: its log-F0 track
    (``f0_cache``) and its Resemblyzer GE2E embedding (``ge2e``), so the audio is never held in memory."""

    def __init__(self, f0_cache: F0Cache | None = None, ge2e=None, sample_rate: int = 16000) -> None:
        self.f0_cache, self.ge2e, self.sample_rate = f0_cache, ge2e, sample_rate
        self.tracks: dict[str, np.ndarray] = {}
        self.embeddings: dict[str, list[np.ndarray]] = {}  # speaker -> its utterances' embeddings

    def __call__(self, ex: Example, wav: np.ndarray) -> None:
        if self.f0_cache is not None:
            self.tracks[ex.utt] = self.f0_cache(wav)
        if self.ge2e is not None:
            try:
                emb = self.ge2e.embed(wav, self.sample_rate, name=ex.utt)
            except UserError as err:
                log.warning("no speaker embedding from %s: %s", ex.utt, err)
            else:
                self.embeddings.setdefault(ex.speaker, []).append(emb)


def _examples(
    units: dict[str, torch.Tensor],
    data_dir: str | pathlib.Path,
    hop: int,
    sample_rate: int,
    audio: AudioPass,
    progress: bool = True,
) -> list[Example]:
    """The utterances in both ``units`` and the data dir whose audio reads and fits their units (within a frame),
    each read once, streaming, through ``audio``."""
    data_dir = pathlib.Path(data_dir)
    utts = {u.utt_id: u for u in read_data_dir(data_dir)}
    common = sorted(set(units) & set(utts), key=str.encode)
    if not common:
        raise UserError(f"{data_dir}: none of its utterances has units (do the units come from this data dir?)")
    missing = len(units) - len(common)
    if missing:
        log.warning("%d utterance(s) with units are not in %s; training without them", missing, data_dir)
    speakers = speakers_of(common, read_utt2spk(data_dir))
    examples = []
    parts = [what for what, on in (("F0", audio.f0_cache), ("GE2E", audio.ge2e)) if on is not None]
    desc = f"reading {data_dir.name}" + (f" ({', '.join(parts)})" if parts else "")
    for utt in tqdm(common, desc=desc, unit="utt", disable=not progress):
        u = utts[utt]
        try:
            wav = load_audio(u.source, sample_rate, u.start, u.end, name=utt)
        except AudioError as err:
            log.warning("dropping %s: %s", utt, err)
            continue
        frames = -(-wav.shape[0] // hop)
        if abs(frames - units[utt].shape[1]) > 1:
            raise UserError(
                f"{data_dir}: utterance {utt!r} has {wav.shape[0]} samples ({frames} frames of {hop}), but "
                f"{units[utt].shape[1]} frames of units; are the units from this audio?"
            )
        examples.append(Example(utt, units[utt], u, speakers[utt]))
        audio(examples[-1], wav)
    if not examples:
        raise UserError(f"{data_dir}: no readable utterance with units")
    return examples


def _add_f0(examples: list[Example], tracks: dict[str, np.ndarray], cfg: VocoderConfig) -> None:
    """F0 bins of each example, normalised by its speaker's voiced log-F0 statistics over all the examples."""
    by_speaker: dict[str, list[np.ndarray]] = {}
    for ex in examples:
        by_speaker.setdefault(ex.speaker, []).append(tracks[ex.utt])
    stats = {spk: f0_stats(t) for spk, t in by_speaker.items()}
    for ex in examples:
        frames = ex.units.shape[1]
        track = tracks[ex.utt][:frames]
        track = np.pad(track, (0, frames - track.shape[0]), constant_values=np.nan)
        ex.f0 = quantize_f0(track, stats[ex.speaker], cfg.f0_bins, cfg.f0_range)


def _speaker_table(examples: list[Example], embeddings: dict[str, np.ndarray], where) -> dict[str, np.ndarray]:
    """``embeddings`` once every example has a row (its utterance or its speaker); else one line naming one."""
    lacking = [ex.utt for ex in examples if ex.utt not in embeddings and ex.speaker not in embeddings]
    if lacking:
        raise UserError(f"{where}: no embedding for {len(lacking)} utterance(s) or their speakers, e.g. {lacking[0]!r}")
    return embeddings


VAL_MEL_FFT = 1024  # the FFT of VocoderTask's validation mel distance


def long_enough(valid: list[Example], hop: int, fft_sizes: list[int]) -> list[Example]:
    """The validation utterances long enough for every validation spectrum (more samples than half the largest
    FFT: the STFT's reflection padding); the others are left out with a warning naming them, and none left is a
    :class:`UserError`."""
    shortest = max(VAL_MEL_FFT, *fft_sizes) // 2 + 1
    kept = [ex for ex in valid if ex.units.shape[1] * hop >= shortest]
    short = [ex.utt for ex in valid if ex not in kept]
    if short:
        log.warning(
            "%d validation utterance(s) under %d samples (%d unit frames) left out: %s",
            len(short),
            shortest,
            -(-shortest // hop),
            ", ".join(short[:5]) + (", ..." if len(short) > 5 else ""),
        )
    if not kept:
        raise UserError(f"no validation utterance has {shortest} samples or more (the largest validation FFT's half)")
    return kept


def resumed_model(exp: pathlib.Path) -> dict | None:
    """The vocoder config (``model`` section) of ``exp/checkpoints/last.ckpt``, or ``None`` without one: what a
    resumed run must continue with."""
    last = exp / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    payload = torch.load(last, map_location="cpu", weights_only=True)
    return payload.get("hyper_parameters", {}).get("config", {}).get("model")


def parse_levels(text: str | None) -> list[int] | None:
    """``--levels 0,1`` -> ``[0, 1]``."""
    if text is None:
        return None
    try:
        levels = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--levels takes a comma list of residual levels such as 0 or 0,1, got {text!r}") from None
    if not levels or min(levels) < 0 or len(set(levels)) != len(levels):
        raise UserError(f"--levels must be distinct levels >= 0, got {text!r}")
    return levels


def export_vocoder(checkpoint: pathlib.Path, unit_model: str | pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """Write the vocoder of a Lightning checkpoint as a model folder carrying ``unit_model``."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    cfg = payload["hyper_parameters"]["config"]
    vocoder = Vocoder(from_dict(VocoderConfig, cfg["model"], where=f"{checkpoint} model"), unit_model=unit_model)
    prefix = "vocoder."
    vocoder.load_state_dict({k[len(prefix) :]: v for k, v in payload["state_dict"].items() if k.startswith(prefix)})
    return vocoder.save_pretrained(out, overwrite=True)  # train_vocoder refuses an existing model.pt up front


def train_vocoder(
    config: str | pathlib.Path | TrainVocoderConfig | None,
    units: str | pathlib.Path,
    data: str | pathlib.Path,
    unit_model: str | pathlib.Path,
    exp_dir: str | pathlib.Path,
    valid_units: str | pathlib.Path | None = None,
    valid_data: str | pathlib.Path | None = None,
    levels: list[int] | None = None,
    init_decoder: str | pathlib.Path | None = None,
    resume: bool = False,
    overrides: dict | None = None,
    allow_config_change: bool = False,
    progress: bool = True,
) -> pathlib.Path:
    """Train a unit vocoder; returns the exported ``EXP/model.pt`` folder (best validation mel distance).

    Args:
        config: YAML path or config object; on ``resume`` the experiment's own ``config.yaml``.
        units, data: the training units (``extract-units`` dir or ``.km``) and the Kaldi data dir of their audio
            (``wav.scp``, ``utt2spk``; without it speakers are the id prefixes before ``-``).
        unit_model: the model that made the units (a codec or a k-means model); copied into the vocoder.
        valid_units, valid_data: a validation set; without it ``data.holdout`` training utterances are held out.
        levels: residual levels of the units to read (sets ``model.levels``).
        init_decoder: a codec whose decoder starts the vocoder's (sets ``init_decoder``, see
            :class:`~vqaudio.train.config.TrainVocoderConfig`).
        resume, overrides, allow_config_change: as :func:`vqaudio.train.run_codec.train_codec`.
        progress: progress bars over the audio pass.
    """
    exp = pathlib.Path(exp_dir)
    if (exp / "model.pt").exists() and not resume:
        raise UserError(
            f"{exp / 'model.pt'} exists; pass --resume to continue that experiment or choose another --exp-dir"
        )
    if (valid_units is None) != (valid_data is None):
        raise UserError("--valid-units and --valid-data go together (or give neither to hold out training utterances)")
    cfg = prepare_experiment(TrainVocoderConfig, config, exp, resume, overrides, "vocoder", allow_config_change)
    if levels is not None and levels != cfg.model.levels:
        cfg.model = dataclasses.replace(cfg.model, levels=levels)
        save_yaml(cfg, exp / "config.yaml")
    if init_decoder is not None and str(init_decoder) != cfg.init_decoder:
        cfg.init_decoder = str(init_decoder)
        save_yaml(cfg, exp / "config.yaml")
    start = None
    if cfg.init_decoder is not None:
        start = Codec.from_pretrained(cfg.init_decoder)
        cfg.model = dataclasses.replace(cfg.model, **decoder_fields(start.config, f"init_decoder {cfg.init_decoder}"))
    model = load_unit_model(unit_model)
    checksum = model_checksum(unit_model)
    check_unit_model(cfg.model, model, str(unit_model))
    resumed = resumed_model(exp) if resume else None
    if resumed is not None and resumed.get("unit_model") and resumed["unit_model"] != checksum:
        raise UserError(
            f"--resume: {unit_model} is another unit model (checksum {checksum[:12]}...) than the one {exp} was "
            f"trained on ({resumed['unit_model'][:12]}...); give that one, or train the new one in another --exp-dir"
        )
    unit_cfg = dataclasses.replace(
        cfg.model, sample_rate=model.sample_rate, hop_length=model.hop_length, codebook_size=model.codebook_size
    )
    hop, sr = unit_cfg.hop_length, unit_cfg.sample_rate
    table = read_units(units, unit_cfg.levels, unit_model, checksum, model.codebook_size)
    f0_cache = F0Cache(cfg.data.f0_cache or exp / "f0_cache", sr, hop) if cfg.model.f0 else None
    computed = exp / "speaker_embeddings.txt"
    embeddings = None
    if cfg.model.speaker == "external":
        table_file = cfg.data.speaker_embeddings or (computed if computed.is_file() else None)
        embeddings = None if table_file is None else read_embeddings(table_file)
    audio = AudioPass(f0_cache, ge2e_encoder() if cfg.model.speaker == "external" and embeddings is None else None, sr)
    train = _examples(table, data, hop, sr, audio, progress)
    if valid_units is not None:
        vtable = read_units(valid_units, unit_cfg.levels, unit_model, checksum, model.codebook_size)
        valid = _examples(vtable, valid_data, hop, sr, audio, progress)
    else:
        if len(train) < 2:
            raise UserError(f"{data}: one utterance; give --valid-units/--valid-data or more training data")
        n = min(cfg.data.holdout, len(train) - 1)
        held = set(range(len(train) - 1, -1, -max(1, len(train) // n))[:n])  # spread over the sorted ids
        valid = [ex for i, ex in enumerate(train) if i in held]
        train = [ex for i, ex in enumerate(train) if i not in held]
        log.info("holding out %d training utterance(s) for validation: %s", n, [ex.utt for ex in valid])
    valid = long_enough(valid[: cfg.data.valid_max_utts], hop, cfg.loss.stft_fft_sizes)
    speakers = sorted({ex.speaker for ex in train}, key=str.encode) if unit_cfg.speaker == "table" else []
    if resumed is not None and unit_cfg.speaker == "table" and resumed.get("speakers", speakers) != speakers:
        raise UserError(
            f"--resume: the training data's speakers ({len(speakers)}) are not the {len(resumed['speakers'])} of the "
            f"speaker table {exp} was trained with; resume with the same --data"
        )
    cfg.model = dataclasses.replace(unit_cfg, unit_model=checksum, speakers=speakers)
    if f0_cache is not None:
        _add_f0(train + valid, audio.tracks, cfg.model)
        log.info("F0 cache %s: %d reused, %d computed", f0_cache.folder, f0_cache.hits, f0_cache.misses)
    if cfg.model.speaker == "external":
        if embeddings is None:
            embeddings = {spk: mean_embedding(e) for spk, e in audio.embeddings.items()}
            write_embeddings(computed, embeddings)
            log.info("Resemblyzer GE2E embeddings of %d speakers written to %s", len(embeddings), computed)
        embeddings = _speaker_table(train + valid, embeddings, cfg.data.speaker_embeddings or computed)
        cfg.model = dataclasses.replace(cfg.model, external_dim=next(iter(embeddings.values())).shape[0])
    ids = {name: i for i, name in enumerate(speakers)}
    common = dict(speaker=cfg.model.speaker, speaker_ids=ids, embeddings=embeddings)
    reference = round(cfg.model.reference_seconds * sr)
    train_set = VocoderCrops(
        train, sr, hop, cfg.data.segment_frames, reference_samples=reference, cache_mb=cfg.data.audio_cache_mb, **common
    )
    max_frames = max(1, int(cfg.data.valid_max_seconds * cfg.model.frame_rate))
    valid_set = VocoderCrops(valid, sr, hop, None, max_frames=max_frames, **common)
    d = cfg.data
    sampler = RandomSampler(train_set, replacement=True, num_samples=d.batch_size * BATCHES_PER_EPOCH)
    workers = dict(num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    train_loader = DataLoader(train_set, d.batch_size, sampler=sampler, drop_last=True, **workers)
    valid_loader = DataLoader(valid_set, 1, shuffle=False, **workers)
    log.info(
        "vocoder on %d utterances (%d held for validation), levels %s of %s, speaker input %s%s",
        len(train),
        len(valid),
        cfg.model.levels,
        unit_model,
        cfg.model.speaker,
        f" ({len(speakers)} speakers)" if speakers else "",
    )
    task = VocoderTask(to_dict(cfg))
    if start is not None and not resume:
        task.vocoder.decoder.load_state_dict(start.decoder.state_dict())
        log.info("vocoder decoder (%s) starts from the decoder of %s", cfg.model.decoder, cfg.init_decoder)
    trainer, best = fit(task, train_loader, valid_loader, cfg.trainer, exp, resume, "val/mel_distance")
    out = exp / "model.pt"
    if trainer.is_global_zero:
        export_vocoder(best, unit_model, out)
        log.info("exported %s (from %s) after %d vocoder steps", out, best.name, int(task.gen_steps))
    return out
