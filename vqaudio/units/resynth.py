"""Resynthesis: units (Kaldi text dir or fairseq .tsv/.km) -> wav files and a wav.scp."""

from __future__ import annotations

import logging
import pathlib

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
