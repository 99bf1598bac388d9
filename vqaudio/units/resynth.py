"""Resynthesis: units (Kaldi text dir or fairseq .tsv/.km) -> wav files and a wav.scp."""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from ..checkpoint import model_checksum, same_model
from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text, make_dirs, path_inside
from ..models.codec import Codec
from .formats import UnitsInfo, read_fairseq, read_info, read_levels

log = logging.getLogger(__name__)


def load_unit_set(
    units: str | pathlib.Path, n_q: int | None
) -> tuple[dict[str, tuple[list[list[int]], int | None]], UnitsInfo | None]:
    """``({utt: (codes per level, num_samples or None)}, units.json)`` from a units dir, its ``units`` file,
    or a ``.km`` (whose ``units.json``, beside it when ``extract-units`` wrote it, may be missing: ``None``)."""
    path = pathlib.Path(units)
    if path.suffix == ".km":
        _, rows = read_fairseq(path.parent, path.stem)
        info = read_info(path.parent) if (path.parent / "units.json").is_file() else None
        return {pathlib.Path(rel).stem: ([codes], n) for rel, n, codes in rows}, info
    out_dir = path if path.is_dir() else path.parent
    info = read_info(out_dir)
    if info.dedup:
        raise UserError(
            f"{out_dir}: units were deduplicated (--dedup); durations are lost, so they cannot be "
            "resynthesized. Extract again without --dedup."
        )
    return {utt: (codes, None) for utt, codes in read_levels(out_dir, n_q).items()}, info


def check_unit_model(units, info: UnitsInfo | None, model, any_model: bool) -> None:
    """Refuse units that ``units.json`` says another model made, or that have no ``units.json`` to say, in
    one line, unless ``any_model``."""
    if any_model:
        return
    if info is None:
        raise UserError(
            f"{units}: no units.json beside it says which model made these units; pass --any-model to decode "
            f"them with {model} anyway"
        )
    if not same_model(info.model_checksum, model):
        raise UserError(
            f"{units} were made by another model (checksum {info.model_checksum[:12]}... in units.json, {model} "
            f"is {model_checksum(model)[:12]}...); pass --any-model to decode them anyway"
        )


def resynthesize(
    model: str | pathlib.Path,
    units: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    n_q: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    any_model: bool = False,
) -> pathlib.Path:
    """Decode every utterance of a unit set to ``out_dir/<utt>.wav``; write ``out_dir/wav.scp``. Resumable:
    wav files already there are kept. Units of another model than ``model`` (by ``units.json``) are refused
    unless ``any_model``; units the codec cannot decode (levels or range) always are."""
    table, info = load_unit_set(units, n_q)
    check_unit_model(units, info, model, any_model)
    codec = Codec.from_pretrained(model, map_location=device).to(device)
    for utt, (codes, _) in table.items():
        levels = len(codes)
        low = min((min(level) for level in codes if level), default=0)
        high = max((max(level) for level in codes if level), default=0)
        if levels > codec.n_q or low < 0 or high >= codec.codebook_size:
            raise UserError(
                f"{units}: utterance {utt!r} has {levels} level(s) of units in [{low}, {high}], but {model} "
                f"decodes at most {codec.n_q} level(s) of units in [0, {codec.codebook_size - 1}]"
            )
        if not codes or not codes[0]:
            raise UserError(f"{units}: utterance {utt!r} has no units")
    out = pathlib.Path(out_dir)
    make_dirs(out)
    scp = []
    for utt in tqdm(sorted(table, key=str.encode), desc="resynth", unit="utt", disable=not progress):
        codes, num_samples = table[utt]
        wav_path = path_inside(out, utt, ".wav")
        scp.append(f"{utt} {wav_path.resolve()}\n")
        if wav_path.exists():
            continue
        idx = torch.tensor(codes, dtype=torch.long, device=device)
        wav = codec.decode_utterance(idx, length=num_samples).cpu().numpy()
        with atomic_output(wav_path) as tmp:
            sf.write(tmp, wav, codec.sample_rate, format="WAV", subtype="PCM_16")
    atomic_write_text(out / "wav.scp", "".join(scp))
    log.info("resynthesized %d utterances into %s", len(scp), out)
    return out / "wav.scp"


def resynthesize_with_vocoder(
    vocoder: str | pathlib.Path,
    units: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    speaker: str | None = None,
    reference: str | pathlib.Path | None = None,
    f0: str | None = None,
    data: str | pathlib.Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[pathlib.Path, list[str]]:
    """Turn every utterance of a unit set into ``out_dir/<utt>.wav`` with a unit vocoder; write ``out_dir/wav.scp``.

    Resumable (wav files already there are kept); each file is written atomically. Everything that can be checked
    before writing is (units of another unit model than the vocoder's, units outside its vocabulary, an unknown
    speaker, a short or silent reference, utterances missing from ``data``); an utterance whose audio cannot be
    read for its F0 is logged, listed in ``out_dir/failed.txt`` and left out, and the others are written.

    Args:
        vocoder: a ``train-vocoder`` model folder.
        units: a units dir, its ``units`` file, or a ``.km``.
        speaker: a training speaker id (``table`` vocoders).
        reference: an audio file whose voice is used (``reference`` and ``external`` vocoders).
        f0: ``"source"``: F0 of the source audio in ``data`` (normalised by each speaker's statistics over ``data``,
            by ``utt2spk``; moved to the reference's with ``reference``); ``"none"``: F0 not given. Default:
            ``"source"`` for a vocoder with F0 when ``data`` is given, else ``"none"``.
        data: Kaldi data dir of the units' source audio (for ``f0="source"``).

    Returns:
        ``wav.scp``'s path and the utterances that failed.
    """
    from ..data.audio import AudioError, load_audio
    from ..data.kaldi import read_data_dir, speakers_of
    from ..models.vocoder import UNIT_MODEL_DIR, F0Cache, Vocoder, f0_stats, quantize_f0, rescale_f0

    voc = Vocoder.from_pretrained(vocoder, map_location=device).to(device)
    cfg = voc.config
    if speaker is not None and reference is not None:
        raise UserError("give --speaker or --reference, not both")
    if f0 not in (None, "source", "none"):
        raise UserError(f"--f0 must be source or none, got {f0!r}")
    f0 = f0 or ("source" if cfg.f0 and data is not None else "none")
    if f0 == "source" and not cfg.f0:
        raise UserError(f"{vocoder} was trained without F0 (f0: false); drop --f0 source")
    if f0 == "source" and data is None:
        raise UserError("--f0 source needs the source audio: give --data, the Kaldi data dir of the units")
    table, info = load_unit_set(units, max(cfg.levels) + 1)
    if info is None:
        raise UserError(f"{units}: no units.json beside it says which unit model made these units")
    if info.model_checksum != cfg.unit_model and not same_model(
        info.model_checksum, pathlib.Path(vocoder) / UNIT_MODEL_DIR
    ):
        raise UserError(
            f"{units} were made by another unit model than {vocoder}'s (checksum {info.model_checksum[:12]}... in "
            f"units.json, the vocoder's unit model is {cfg.unit_model[:12]}...)"
        )
    for utt, (codes, _) in table.items():
        if not codes or not codes[0]:
            raise UserError(f"{units}: utterance {utt!r} has no units")
        low = min(min(codes[q]) for q in cfg.levels)
        high = max(max(codes[q]) for q in cfg.levels)
        if low < 0 or high >= cfg.codebook_size:
            raise UserError(
                f"{units}: utterance {utt!r} has unit {low if low < 0 else high}, outside {vocoder}'s vocabulary "
                f"[0, {cfg.codebook_size - 1}]"
            )
    voice = voc.voice(load_audio(str(reference), voc.sample_rate)) if reference is not None else None
    if speaker is not None:
        voc.resynthesize([[0]] * len(cfg.levels), speaker=speaker)  # an unknown id: one line before any output
    sources = {}
    if f0 == "source":
        sources = {u.utt_id: u for u in read_data_dir(data)}
        missing = sorted(set(table) - set(sources), key=str.encode)
        if missing:
            raise UserError(
                f"--data {data}: no audio for {len(missing)} utterance(s) of the units, e.g. {missing[0]!r}"
            )
    out = pathlib.Path(out_dir)
    make_dirs(out)
    utts = sorted(table, key=str.encode)
    paths = {utt: path_inside(out, utt, ".wav") for utt in utts}
    todo = [utt for utt in utts if not paths[utt].exists()]
    failed: list[str] = []
    bins: dict[str, torch.Tensor] = {}
    if f0 == "source" and todo:
        cache = F0Cache(out / ".f0_cache", voc.sample_rate, voc.hop_length)
        utt2spk = pathlib.Path(data) / "utt2spk"
        spk_of = speakers_of(utts, utt2spk if utt2spk.is_file() else None)
        tracks = {}
        for utt in tqdm(utts, desc="F0 (pYIN, cached)", unit="utt", disable=not progress):  # each speaker's stats
            u = sources[utt]
            try:
                tracks[utt] = cache(load_audio(u.source, voc.sample_rate, u.start, u.end, name=utt))
            except AudioError as err:
                log.warning("%s: %s", utt, err)
                if utt in todo:
                    failed.append(utt)
        stats = {s: f0_stats([t for u, t in tracks.items() if spk_of[u] == s]) for s in set(spk_of.values())}
        for utt, track in tracks.items():
            frames = len(table[utt][0][0])
            track = np.pad(track[:frames], (0, max(0, frames - track.shape[0])), constant_values=np.nan)
            source = stats[spk_of[utt]]
            target = voice.f0 if voice is not None and voice.f0 is not None else source
            bins[utt] = quantize_f0(rescale_f0(track, source, target), target, cfg.f0_bins, cfg.f0_range)
    for utt in tqdm(todo, desc="resynth (vocoder)", unit="utt", disable=not progress):
        if utt in failed:
            continue
        codes, num_samples = table[utt]
        idx = torch.tensor([codes[q] for q in cfg.levels], dtype=torch.long)
        wav = voc.resynthesize(idx, speaker=speaker, reference=voice, f0=bins.get(utt), length=num_samples)
        with atomic_output(paths[utt]) as tmp:
            sf.write(tmp, wav.numpy(), voc.sample_rate, format="WAV", subtype="PCM_16")
    scp = [f"{utt} {paths[utt].resolve()}\n" for utt in utts if utt not in failed]
    atomic_write_text(out / "wav.scp", "".join(scp))
    if failed:
        atomic_write_text(out / "failed.txt", "".join(f"{utt}\n" for utt in failed))
    log.info("resynthesized %d utterances into %s with %s (%d failed)", len(scp), out, vocoder, len(failed))
    return out / "wav.scp", failed
