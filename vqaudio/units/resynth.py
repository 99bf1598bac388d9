"""Resynthesis: units (Kaldi text dir or fairseq .tsv/.km) -> wav files and a wav.scp."""

from __future__ import annotations

import logging
import pathlib

import soundfile as sf
import torch
from tqdm import tqdm

from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text, path_inside
from ..models.codec import Codec
from .formats import read_fairseq, read_info, read_levels

log = logging.getLogger(__name__)


def load_unit_set(units: str | pathlib.Path, n_q: int | None) -> dict[str, tuple[list[list[int]], int | None]]:
    """``{utt: (codes per level, num_samples or None)}`` from a units dir, its ``units`` file, or a ``.km``."""
    path = pathlib.Path(units)
    if path.suffix == ".km":
        _, rows = read_fairseq(path.parent, path.stem)
        return {pathlib.Path(rel).stem: ([codes], n) for rel, n, codes in rows}
    out_dir = path if path.is_dir() else path.parent
    info = read_info(out_dir)
    if info.dedup:
        raise UserError(
            f"{out_dir}: units were deduplicated (--dedup); durations are lost, so they cannot be "
            "resynthesized. Extract again without --dedup."
        )
    return {utt: (codes, None) for utt, codes in read_levels(out_dir, n_q).items()}


def resynthesize(
    model: str | pathlib.Path,
    units: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    n_q: int | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> pathlib.Path:
    """Decode every utterance of a unit set to ``out_dir/<utt>.wav``; write ``out_dir/wav.scp``. Resumable:
    wav files already there are kept."""
    codec = Codec.from_pretrained(model, map_location=device).to(device)
    table = load_unit_set(units, n_q)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
