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
from ..fileio import atomic_output, atomic_write_text, file_sha256, path_inside
from ..models.codec import Codec
from ..outdir import claim_output_dir, data_identity, digest, write_failed
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


def units_folder(units: str | pathlib.Path) -> pathlib.Path:
    """The folder of a unit set given as a units dir, its ``units`` file or a ``.km``."""
    path = pathlib.Path(units)
    return path if path.is_dir() else path.parent


def units_identity(table: dict, info: UnitsInfo | None) -> str:
    """What a unit set holds: its unit model's checksum and a digest of every utterance's units."""
    model = info.model_checksum if info is not None else None
    return f"{str(model)[:16]} units:{digest(sorted((u, c) for u, (c, _) in table.items()))[:16]}"


def resynthesize(
    model: str | pathlib.Path,
    units: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    n_q: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    any_model: bool = False,
    force: bool = False,
) -> pathlib.Path:
    """Decode every utterance of a unit set to ``out_dir/<utt>.wav``; write ``out_dir/wav.scp``. Resumable:
    wav files already there are kept when ``out_dir/request.json`` records the same model, units and ``n_q``
    (another request is refused unless ``force``, which redoes every file; see
    :func:`vqaudio.outdir.claim_output_dir`). Units of another model than ``model`` (by ``units.json``) are
    refused unless ``any_model``; units the codec cannot decode (levels or range) always are."""
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
    utts = sorted(table, key=str.encode)
    paths = {utt: path_inside(out, utt, ".wav") for utt in utts}
    request = {"model": model_checksum(model), "units": units_identity(table, info), "n_q": n_q}
    inputs = {"--model": model, "--units": units_folder(units)}
    redo = claim_output_dir(out, "resynth --model", request, paths.values(), inputs, force)
    scp = []
    for utt in tqdm(utts, desc="resynth", unit="utt", disable=not progress):
        codes, num_samples = table[utt]
        wav_path = paths[utt]
        scp.append(f"{utt} {wav_path.resolve()}\n")
        if wav_path.exists() and not redo:
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
    own_voice: bool = False,
    force: bool = False,
) -> tuple[pathlib.Path, list[str]]:
    """Turn every utterance of a unit set into ``out_dir/<utt>.wav`` with a unit vocoder; write ``out_dir/wav.scp``.

    Resumable: wav files already there are kept when ``out_dir/request.json`` records the same vocoder, units,
    voice, F0 and data (another request is refused in one line naming what differs, unless ``force``, which
    redoes every file; an output folder that is an input, or holds files this command did not write, is
    refused: :func:`vqaudio.outdir.claim_output_dir`). Each file is written atomically. Everything that can be
    checked before writing is (units of another unit model than the vocoder's, units outside its vocabulary,
    an unknown speaker, a short or silent reference, utterances missing from ``data``); an utterance whose
    audio cannot be read for its F0, or (``own_voice``) whose speaker has no usable reference, is logged,
    listed in ``out_dir/failed.txt`` and left out, and the others are written.

    Args:
        vocoder: a ``train-vocoder`` model folder.
        units: a units dir, its ``units`` file, or a ``.km``.
        speaker: a training speaker id (``table`` vocoders).
        reference: an audio file whose voice is used (``reference`` and ``external`` vocoders).
        f0: ``"source"``: F0 of the source audio in ``data``, normalised by each speaker's statistics over ``data``
            (by ``utt2spk``): the contour, whose level and range the voice sets; ``"none"``: F0 not given. Default:
            ``"source"`` for a vocoder with F0 when ``data`` is given, else ``"none"``.
        data: Kaldi data dir of the units' source audio (for ``f0="source"`` and ``own_voice``).
        own_voice: each utterance in its own speaker's voice (``reference`` and ``external`` vocoders): the
            reference is the longest other utterance of its speaker in ``data`` (by ``utt2spk``) that can serve
            (long enough, not silent), else the utterance itself; ``out_dir/utt2reference`` records which.
        force: redo the files already there, whatever request made them.

    Returns:
        ``wav.scp``'s path and the utterances that failed.
    """
    from ..data.audio import AudioError, load_audio
    from ..data.kaldi import read_data_dir, read_utt2spk, speakers_of
    from ..models.vocoder import F0Cache, Vocoder, f0_stats, quantize_f0

    if sum(x is not None and x is not False for x in (speaker, reference, own_voice)) > 1:
        raise UserError("give one of --speaker, --reference and --own-voice")
    if own_voice and data is None:
        raise UserError("--own-voice takes each speaker's voice from its other utterances: give --data")
    if f0 not in (None, "source", "none"):
        raise UserError(f"--f0 must be source or none, got {f0!r}")
    voc = Vocoder.from_pretrained(vocoder, map_location=device).to(device)  # checks its unit_model/ is its own
    cfg = voc.config
    f0 = f0 or ("source" if cfg.f0 and data is not None else "none")
    if f0 == "source" and not cfg.f0:
        raise UserError(f"{vocoder} was trained without F0 (f0: false); drop --f0 source")
    if f0 == "source" and data is None:
        raise UserError("--f0 source needs the source audio: give --data, the Kaldi data dir of the units")
    table, info = load_unit_set(units, max(cfg.levels) + 1)
    check_vocoder_units(vocoder, cfg, units, table, info)
    voice = voc.voice(load_audio(str(reference), voc.sample_rate), name=str(reference)) if reference else None
    if speaker is not None:
        voc.resynthesize([[0]] * len(cfg.levels), speaker=speaker)  # an unknown id: one line before any output
    sources = {}
    if f0 == "source" or own_voice:
        sources = {u.utt_id: u for u in read_data_dir(data)}
        missing = sorted(set(table) - set(sources), key=str.encode)
        if missing:
            raise UserError(
                f"--data {data}: no audio for {len(missing)} utterance(s) of the units, e.g. {missing[0]!r}"
            )
    utts = sorted(table, key=str.encode)
    out = pathlib.Path(out_dir)
    paths = {utt: path_inside(out, utt, ".wav") for utt in utts}
    given = "own-voice" if own_voice else f"speaker {speaker}" if speaker is not None else None
    request = {
        "vocoder": voc.checksum,
        "units": units_identity(table, info),
        "voice": f"reference sha256:{file_sha256(reference)[:16]}" if reference else given,
        "f0": f0,
        "data": None if data is None else data_identity(data),
    }
    inputs = {"--vocoder": vocoder, "--units": units_folder(units), "--data": data, "--reference": reference}
    outputs = [*paths.values(), out / "utt2reference"]
    redo = claim_output_dir(out, "resynth --vocoder", request, outputs, inputs, force)
    failed: list[str] = []
    references: dict[str, str] = {}
    if own_voice:
        references, voices, failed = own_voices(voc, utts, data, sources, progress)
    todo = [utt for utt in utts if utt not in failed and (redo or not paths[utt].exists())]
    bins: dict[str, torch.Tensor] = {}
    if f0 == "source" and todo:
        cache = F0Cache(out / ".f0_cache", voc.sample_rate, voc.hop_length)
        spk_of = speakers_of(utts, read_utt2spk(data))
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
            # speaker-normalised: the contour; the pitch level and range come with the speaker input
            bins[utt] = quantize_f0(track, stats[spk_of[utt]], cfg.f0_bins, cfg.f0_range)
    for utt in tqdm(todo, desc="resynth (vocoder)", unit="utt", disable=not progress):
        if utt in failed:
            continue
        codes, num_samples = table[utt]
        idx = torch.tensor([codes[q] for q in cfg.levels], dtype=torch.long)
        goal = voices[references[utt]] if own_voice else voice
        wav = voc.resynthesize(idx, speaker=speaker, reference=goal, f0=bins.get(utt), length=num_samples)
        with atomic_output(paths[utt]) as tmp:
            sf.write(tmp, wav.numpy(), voc.sample_rate, format="WAV", subtype="PCM_16")
    failed = sorted(set(failed), key=str.encode)
    scp = [f"{utt} {paths[utt].resolve()}\n" for utt in utts if utt not in failed]
    atomic_write_text(out / "wav.scp", "".join(scp))
    if own_voice:
        atomic_write_text(out / "utt2reference", "".join(f"{u} {references[u]}\n" for u in utts if u not in failed))
    else:
        (out / "utt2reference").unlink(missing_ok=True)  # an earlier request's (-f): not this audio's
    write_failed(out, failed)
    log.info("resynthesized %d utterances into %s with %s (%d failed)", len(scp), out, vocoder, len(failed))
    return out / "wav.scp", failed


def check_vocoder_units(vocoder, cfg, units, table: dict, info: UnitsInfo | None) -> None:
    """Refuse, in one line, units that ``units.json`` does not say the vocoder's unit model made, or that hold
    an empty utterance or a unit outside the vocoder's vocabulary."""
    from ..models.vocoder import UNIT_MODEL_DIR

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


def own_voices(voc, utts: list[str], data, sources: dict, progress: bool) -> tuple[dict, dict, list[str]]:
    """``(references, voices, failed)`` of ``--own-voice``: for each utterance the first of its candidates
    (:func:`own_references`) whose audio serves as a reference voice, the voices by reference, and the
    utterances none of whose candidates serves (each logged with its speaker and every candidate's reason)."""
    from ..data.audio import AudioError, load_audio

    candidates = own_references(utts, data, sources)
    voices: dict = {}
    problems: dict[str, str] = {}
    references: dict[str, str] = {}
    failed: list[str] = []
    for utt in tqdm(utts, desc="reference voices", unit="utt", disable=not progress):
        for ref in candidates[utt]:
            if ref not in voices and ref not in problems:
                u = sources[ref]
                try:
                    audio = load_audio(u.source, voc.sample_rate, u.start, u.end, name=ref)
                    voices[ref] = voc.voice(audio, name=f"reference {ref}")
                except (AudioError, UserError) as err:
                    problems[ref] = str(err)
            if ref in voices:
                references[utt] = ref
                break
        else:
            tried = "; ".join(problems[ref] for ref in candidates[utt])
            log.warning("%s: no utterance of its speaker can give its voice: %s", utt, tried)
            failed.append(utt)
    return references, voices, failed


def own_references(utts: list[str], data: str | pathlib.Path, sources: dict) -> dict[str, list[str]]:
    """For each utterance, the candidates for its reference voice: the other utterances of its speaker in the
    data dir ``data`` (by ``utt2spk``, durations from ``utt2dur`` or the audio files' headers), longest first,
    then the utterance itself."""
    from ..data.audio import AudioError, load_audio
    from ..data.kaldi import read_utt2dur, read_utt2spk, speakers_of

    spk_of = speakers_of(sorted(sources), read_utt2spk(data))
    durations = read_utt2dur(data)
    wanted = {spk_of[x] for x in utts}
    for utt, u in sources.items():
        if utt not in durations and spk_of[utt] in wanted:
            try:
                durations[utt] = len(load_audio(u.source, 16000, u.start, u.end, name=utt)) / 16000
            except AudioError as err:
                log.warning("%s cannot be a reference: %s", utt, err)
                durations[utt] = -1.0
    by_speaker: dict[str, list[str]] = {}
    for utt in sorted(sources, key=lambda x: (-durations.get(x, -1.0), x.encode())):
        if durations.get(utt, -1.0) > 0:
            by_speaker.setdefault(spk_of[utt], []).append(utt)
    return {utt: [*(x for x in by_speaker.get(spk_of[utt], []) if x != utt), utt] for utt in utts}


def convert_data_dir(
    vocoder: str | pathlib.Path,
    data: str | pathlib.Path,
    pairs: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
) -> tuple[pathlib.Path, list[str]]:
    """Voice conversion of utterances of a Kaldi data dir, each into the voice of another utterance of it.

    ``pairs`` has a line ``utt reference_utt`` per conversion (both in ``data``). Writes ``out_dir/<utt>.wav``,
    ``wav.scp``, ``utt2target`` (the reference's speaker, by ``data/utt2spk``) and ``utt2reference``, which
    ``vqaudio evaluate --speaker-sim`` reads to score conversions. Resumable: wav files already there are kept
    when ``out_dir/request.json`` records the same vocoder, data and conversions (another request is refused
    in one line naming what differs, unless ``force``, which redoes every file; an output folder that is an
    input, or holds files this command did not write, is refused). An utterance whose audio cannot be read is
    logged, listed in ``out_dir/failed.txt`` and left out; a reference that cannot serve (unreadable, too
    short, silent) is one error before anything is written, and so is a vocoder whose unit model is not its
    own. Returns ``wav.scp``'s path and the failed utterances.
    """
    from ..data.audio import AudioError, load_audio
    from ..data.kaldi import read_data_dir, read_utt2spk, speakers_of
    from ..models.vocoder import Vocoder

    data, pairs = pathlib.Path(data), pathlib.Path(pairs)
    sources = {u.utt_id: u for u in read_data_dir(data)}
    if not pairs.is_file():
        raise UserError(f"{pairs}: no such file (a line 'utt reference_utt' per conversion)")
    plan: dict[str, str] = {}
    for number, line in enumerate(pairs.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise UserError(f"{pairs}:{number}: expected 'utt reference_utt', got {line!r}")
        for utt in fields:
            if utt not in sources:
                raise UserError(f"{pairs}:{number}: {utt!r} is not an utterance of {data}")
        if fields[0] in plan:
            raise UserError(f"{pairs}:{number}: {fields[0]!r} is converted twice")
        plan[fields[0]] = fields[1]
    if not plan:
        raise UserError(f"{pairs}: no conversions")
    spk_of = speakers_of(sorted(sources), read_utt2spk(data))
    voc = Vocoder.from_pretrained(vocoder, map_location=device).to(device)
    voc.unit_model()  # a unit model that cannot serve: one line, not one per utterance
    out = pathlib.Path(out_dir)
    utts = sorted(plan, key=str.encode)
    paths = {utt: path_inside(out, utt, ".wav") for utt in utts}
    request = {"vocoder": voc.checksum, "data": data_identity(data), "pairs": digest(sorted(plan.items()))[:16]}
    inputs = {"--vocoder": vocoder, "--data": data, "--pairs": pairs}
    outputs = [*paths.values(), out / "utt2target", out / "utt2reference"]
    voices = {}
    for ref in tqdm(sorted(set(plan.values())), desc="reference voices", unit="utt", disable=not progress):
        u = sources[ref]
        try:
            audio = load_audio(u.source, voc.sample_rate, u.start, u.end, name=ref)
        except AudioError as err:
            raise UserError(f"reference {ref}: {err}") from None
        voices[ref] = voc.voice(audio, name=f"reference {ref}")
    redo = claim_output_dir(out, "convert --data", request, outputs, inputs, force)
    failed: list[str] = []
    for utt in tqdm(utts, desc="convert", unit="utt", disable=not progress):
        if paths[utt].exists() and not redo:
            continue
        u = sources[utt]
        try:
            wav = voc.convert(load_audio(u.source, voc.sample_rate, u.start, u.end, name=utt), voices[plan[utt]])
        except (AudioError, UserError) as err:
            log.warning("%s: %s", utt, err)
            failed.append(utt)
            continue
        with atomic_output(paths[utt]) as tmp:
            sf.write(tmp, wav.numpy(), voc.sample_rate, format="WAV", subtype="PCM_16")
    done = [utt for utt in utts if utt not in failed]
    atomic_write_text(out / "wav.scp", "".join(f"{utt} {paths[utt].resolve()}\n" for utt in done))
    atomic_write_text(out / "utt2target", "".join(f"{utt} {spk_of[plan[utt]]}\n" for utt in done))
    atomic_write_text(out / "utt2reference", "".join(f"{utt} {plan[utt]}\n" for utt in done))
    write_failed(out, failed)
    log.info("converted %d utterances into %s with %s (%d failed)", len(done), out, vocoder, len(failed))
    return out / "wav.scp", failed
