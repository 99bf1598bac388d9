"""Sampling new speech from a prior: prior -> units -> codec decoder -> wav files, units and a summary."""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import soundfile as sf
import torch
from tqdm import tqdm

from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text
from ..metrics import unit_stats
from ..units.formats import level_path, write_units
from .codec import Codec
from .wavenet import WaveNetPrior

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
    top_p: float | None = None,
    seed: int = 0,
    batch: int = 8,
    speaker: str | None = None,
    prompt: torch.Tensor | None = None,
) -> dict:
    """Write ``sample_<i>.wav``, their units (``units``, ``units.level<q>``) and ``summary.json``.

    Args:
        num: utterances to sample; seconds: length of each, after the prompt.
        temperature, top_k, top_p, seed: as :meth:`WaveNetPrior.generate`.
        speaker: a speaker name the prior was trained on (a speaker-conditioned prior without one samples
            as its unseen-speaker id 0).
        prompt: ``(n_q, T0)`` units every sample continues; the files hold prompt and continuation, the
            summary's statistics the continuation only.
    """
    if num < 1:
        raise UserError(f"--num must be >= 1, got {num}")
    if not seconds > 0 or not np.isfinite(seconds):
        raise UserError(f"--seconds must be a positive number, got {seconds}")
    if prior.codebook_size != codec.codebook_size or prior.n_q > codec.n_q:
        raise UserError(
            f"prior (K={prior.codebook_size}, n_q={prior.n_q}) does not match the codec "
            f"(K={codec.codebook_size}, n_q={codec.n_q})"
        )
    conditioned = prior.speaker is not None
    if speaker is not None and not conditioned:
        raise UserError(f"--speaker {speaker!r}: this prior was not trained with speakers")
    speaker_id = prior.speaker_id(speaker) if speaker is not None else 0
    if prompt is not None and (prompt.ndim != 2 or prompt.shape[0] != prior.n_q):
        raise UserError(f"the prompt must hold the prior's {prior.n_q} levels, got shape {tuple(prompt.shape)}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = max(1, round(seconds * codec.frame_rate))
    start_frame = 0 if prompt is None else prompt.shape[1]
    units: dict[str, list[list[int]]] = {}
    for start in tqdm(range(0, num, batch), desc="sample", unit="batch"):
        n = min(batch, num - start)
        codes = prior.generate(
            n,
            steps,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed + start,
            prompt=None if prompt is None else prompt[None].expand(n, -1, -1),
            speakers=torch.full((n,), speaker_id, dtype=torch.long) if conditioned else None,
        )  # (n, Q, T0 + steps)
        for i in range(n):
            name = f"sample_{start + i:04d}"
            units[name] = codes[i].tolist()
            wav = codec.decode_utterance(codes[i]).numpy()
            with atomic_output(out / f"{name}.wav") as tmp:
                sf.write(tmp, wav, codec.sample_rate, format="WAV", subtype="PCM_16")
    for q in range(prior.n_q):
        write_units(level_path(out, q), {k: v[q] for k, v in units.items()})
    generated = [v[0][start_frame:] for v in units.values()]
    reps = [repetition_stats(s) for s in generated]
    stats = unit_stats(generated, prior.codebook_size)
    summary = {
        "num": num,
        "seconds": seconds,
        "prompt_frames": start_frame,
        "speaker": speaker,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "seed": seed,
        "unit_entropy_bits": stats["entropy_bits"],
        "codebook_usage": stats["usage"],
        "repetition_rate": float(np.mean([r["repetition_rate"] for r in reps])),
        "longest_run_frames": max(r["longest_run"] for r in reps),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    log.info("sampled %d utterances into %s: %s", num, out, summary)
    return summary
