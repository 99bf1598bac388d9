"""Sampling new speech: prior -> units -> codec decoder -> wav files, units and a summary."""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import soundfile as sf
from tqdm import tqdm

from ..metrics import unit_stats
from ..models.codec import Codec
from ..models.wavenet import WaveNetPrior
from .formats import atomic_write_text, level_path, write_units

log = logging.getLogger(__name__)


def repetition_stats(seq: list[int]) -> dict[str, float]:
    """Fraction of frames equal to the previous one, and the longest run (silence loops show here)."""
    if len(seq) < 2:
        return {"repetition_rate": 0.0, "longest_run": float(len(seq))}
    a = np.asarray(seq)
    same = a[1:] == a[:-1]
    longest, run = 1, 1
    for s in same:
        run = run + 1 if s else 1
        longest = max(longest, run)
    return {"repetition_rate": float(same.mean()), "longest_run": float(longest)}


def sample_speech(
    prior: WaveNetPrior,
    codec: Codec,
    out_dir,
    num: int,
    seconds: float,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    batch: int = 8,
) -> dict:
    """Write ``sample_<i>.wav``, their units (``units``, ``units.level<q>``) and ``summary.json``."""
    if prior.codebook_size != codec.codebook_size or prior.num_levels > codec.num_levels:
        raise ValueError(
            f"prior (K={prior.codebook_size}, {prior.num_levels} levels) does not match the codec "
            f"(K={codec.codebook_size}, {codec.num_levels} levels)"
        )
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(1, round(seconds * codec.frame_rate))
    units: dict[str, list[list[int]]] = {}
    for start in tqdm(range(0, num, batch), desc="sample", unit="batch"):
        n = min(batch, num - start)
        codes = prior.generate(n, steps, temperature=temperature, top_k=top_k, seed=seed + start)
        codes = codes[:, None] if codes.ndim == 2 else codes  # (n, Q, T)
        for i in range(n):
            name = f"sample_{start + i:04d}"
            units[name] = codes[i].tolist()
            wav = codec.decode_utterance(codes[i]).numpy()
            sf.write(out / f"{name}.wav", wav, codec.sample_rate, subtype="PCM_16")
    for q in range(prior.num_levels):
        write_units(level_path(out, q), {k: v[q] for k, v in units.items()})
    level0 = [v[0] for v in units.values()]
    reps = [repetition_stats(s) for s in level0]
    stats = unit_stats(level0, prior.codebook_size)
    summary = {
        "num": num,
        "seconds": seconds,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "unit_entropy_bits": stats["entropy_bits"],
        "codebook_usage": stats["usage"],
        "repetition_rate": float(np.mean([r["repetition_rate"] for r in reps])),
        "longest_run_frames": max(r["longest_run"] for r in reps),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("sampled %d utterances into %s: %s", num, out, summary)
    return summary
