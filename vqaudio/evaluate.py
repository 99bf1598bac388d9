"""Evaluation of resynthesized audio against references: per-utterance CSV, metrics.json, RESULTS.md, plots."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import pathlib

import numpy as np
from tqdm import tqdm

from . import metrics
from .data.audio import AudioError, load_audio
from .data.kaldi import read_data_dir, read_table
from .errors import UserError
from .fileio import atomic_write_text, path_inside
from .plots import spectrogram_figure, usage_histogram_figure
from .units.formats import read_info, read_levels

log = logging.getLogger(__name__)
COLUMNS = ("log_mel_distance", "stft_distance", "si_sdr", "stoi", "pesq_wb")


def evaluate(
    ref: str | pathlib.Path,
    hyp: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    units: str | pathlib.Path | None = None,
    sample_rate: int = 16000,
    num_plots: int = 3,
    progress: bool = True,
) -> dict:
    """Score every utterance of ``hyp`` (a dir with ``wav.scp``) against the Kaldi data dir ``ref``.

    Writes ``per_utterance.csv``, ``metrics.json`` (means; bitrate, token rate, codebook usage and unit
    entropy when ``units`` is given), ``RESULTS.md``, ``spectrogram_<utt>.png`` and ``code_usage.png``.
    """
    import matplotlib.pyplot as plt

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs = {u.utt_id: u for u in read_data_dir(ref)}
    hyp_scp = pathlib.Path(hyp) / "wav.scp" if pathlib.Path(hyp).is_dir() else pathlib.Path(hyp)
    hyps = read_table(hyp_scp)
    missing = sorted(set(refs) - set(hyps))
    if missing:
        log.warning("%d reference utterances have no hypothesis in %s (first: %s)", len(missing), hyp_scp, missing[0])
    common = sorted(set(refs) & set(hyps), key=str.encode)
    if not common:
        raise UserError(f"no utterance of {ref} has a hypothesis in {hyp_scp}")
    rows, plotted = [], 0
    for utt in tqdm(common, desc="evaluate", unit="utt", disable=not progress):
        u = refs[utt]
        try:
            r = load_audio(u.source, sample_rate, u.start, u.end, name=utt)
            h = load_audio(hyps[utt], sample_rate, name=f"{utt} (hypothesis)")
        except AudioError as err:
            log.warning("skipping %s: %s", utt, err)
            continue
        row = {
            "utt": utt,
            "seconds": r.shape[0] / sample_rate,
            "log_mel_distance": metrics.log_mel_distance(r, h, sample_rate),
            "stft_distance": metrics.stft_distance(r, h),
            "si_sdr": metrics.si_sdr(r, h),
            "stoi": metrics.stoi(r, h, sample_rate),
            "pesq_wb": metrics.pesq_wb(r, h, sample_rate),
        }
        rows.append(row)
        if plotted < num_plots:
            import torch

            from .features import MelSpectrogram

            mel = MelSpectrogram(sample_rate, n_fft=1024, hop=256, n_mels=80)
            with torch.no_grad():
                mels = [mel(torch.from_numpy(x)[None, None]).squeeze(0).numpy() for x in (r, h)]
            fig = spectrogram_figure(mels, [f"{utt} reference", f"{utt} resynthesis"])
            fig.savefig(path_inside(out, f"spectrogram_{utt}", ".png"), dpi=100)
            plt.close(fig)
            plotted += 1
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["utt", "seconds", *COLUMNS])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "per_utterance.csv", buf.getvalue())
    summary: dict = {
        "num_utterances": len(rows),
        "num_missing": len(missing),
        "hours": sum(r["seconds"] for r in rows) / 3600,
    }
    for c in COLUMNS:
        values = [r[c] for r in rows if not math.isnan(r[c])]
        summary[c] = float(np.mean(values)) if values else float("nan")
    if units is not None:
        info = read_info(units)
        table = read_levels(units)
        summary.update(
            {
                "bitrate_bps": info.frame_rate * info.n_q * math.log2(info.codebook_size),
                "token_rate": info.frame_rate * info.n_q,
                "n_q": info.n_q,
                "codebook_size": info.codebook_size,
            }
        )
        level0 = [codes[0] for codes in table.values()]
        stats = metrics.unit_stats(level0, info.codebook_size)
        summary.update({"codebook_usage": stats["usage"], "unit_entropy_bits": stats["entropy_bits"]})
        counts = np.bincount(
            np.concatenate([np.asarray(c, dtype=np.int64) for c in level0]), minlength=info.codebook_size
        )
        fig = usage_histogram_figure(counts, f"level-0 code use: {stats['usage']:.0%} of {info.codebook_size} codes")
        fig.savefig(out / "code_usage.png", dpi=100)
        plt.close(fig)
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "RESULTS.md", results_markdown(summary, hyp_scp))
    log.info(
        "evaluated %d utterances: %s", len(rows), {k: round(v, 3) for k, v in summary.items() if isinstance(v, float)}
    )
    return summary


def results_markdown(summary: dict, hyp: pathlib.Path) -> str:
    names = {
        "log_mel_distance": "log-mel distance (lower is better)",
        "stft_distance": "MR-STFT distance (lower)",
        "si_sdr": "SI-SDR dB (higher)",
        "stoi": "STOI (higher)",
        "pesq_wb": "PESQ wide-band (higher)",
        "bitrate_bps": "bitrate (bit/s)",
        "token_rate": "tokens per second",
        "codebook_usage": "codebook usage (level 0)",
        "unit_entropy_bits": "unit entropy (bits, level 0)",
    }
    lines = [
        f"# Results: {hyp.parent}",
        "",
        f"{summary['num_utterances']} utterances, {summary['hours'] * 60:.1f} min of audio"
        + (f", {summary['num_missing']} without a hypothesis" if summary["num_missing"] else ""),
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    lines += [f"| {label} | {summary[key]:.3f} |" for key, label in names.items() if key in summary]
    return "\n".join(lines) + "\n"
