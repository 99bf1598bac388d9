"""How much phonetic information units carry, against forced phone alignments: PNMI and purities, ABX
(within and across speakers, and any context), and an optional CTC phone-recogniser probe (a downstream-ASR
proxy). ``vqaudio evaluate-units`` is the command; :func:`evaluate_units` the library entry point."""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from collections import defaultdict

import numpy as np

from ..data.kaldi import read_utt2spk, speakers_of, text_lines
from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text
from ..metrics import unit_phone_stats
from .abx import Item, abx_error, frame_span, item_frames, write_item_file
from .formats import read_info, read_levels

log = logging.getLogger(__name__)
SILENCES = frozenset({"SIL", "sil", "<sil>", "SP", "sp", "sp1", "spn", "<eps>"})
SIL = "SIL"
# At most this many occurrences of a phone per speaker enter the any-context ABX (a fixed, seeded choice):
# its cells pair every occurrence with every other, which grows with the square of the counts.
ANY_CONTEXT_CAP = 12


def read_ctm(path: str | pathlib.Path) -> dict[str, list[tuple[float, float, str]]]:
    """Phone CTM (``utt channel start dur phone``, optionally a sixth confidence column as in NIST's CTM) ->
    ``{utt: [(start, end, phone), ...]}`` in time order, silence labels mapped to ``SIL``. A malformed line,
    a line that is not UTF-8, and a segment that repeats or overlaps another of its utterance are errors
    naming the file and line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"alignments not found: {path}")
    out: dict[str, list[tuple[float, float, str, int]]] = defaultdict(list)
    for n, line in text_lines(path):
        parts = line.split()
        if not parts or parts[0].startswith(";;"):
            continue
        try:
            if len(parts) not in (5, 6):
                raise ValueError
            start, dur = float(parts[2]), float(parts[3])
            if not (math.isfinite(start) and math.isfinite(dur)) or start < 0 or dur <= 0:
                raise ValueError
            if len(parts) == 6 and not math.isfinite(float(parts[5])):
                raise ValueError
        except ValueError:
            raise UserError(
                f"{path}:{n}: expected 'utt channel start dur phone' (a sixth field: a confidence) with start >= 0 "
                f"and dur > 0, "
                f"got {line.strip()[:80]!r}"
            ) from None
        phone = SIL if parts[4] in SILENCES else parts[4]
        out[parts[0]].append((start, round(start + dur, 6), phone, n))  # no float drift between neighbours
    result = {}
    for utt, segs in out.items():
        segs.sort()
        for (s0, e0, _, n0), (s1, e1, _, n1) in zip(segs, segs[1:], strict=False):
            if s1 < e0 - 1e-6:
                what = "repeats" if (s0, e0) == (s1, e1) else "overlaps"
                first, second = sorted((n0, n1))
                raise UserError(
                    f"{path}:{second}: segment of {utt!r} {what} line {first} ([{s1:g}, {e1:g}) s against "
                    f"[{s0:g}, {e0:g}) s); each frame must have one phone"
                )
        result[utt] = [(s, e, phone) for s, e, phone, _ in segs]
    return result


def frame_phones(segments: list[tuple[float, float, str]], num_frames: int, frame_rate: float) -> list[str]:
    """The phone at the centre ``(i + 0.5) / frame_rate`` of each frame; ``SIL`` where no segment covers it."""
    labels = [SIL] * num_frames
    for start, end, phone in segments:
        first, last = frame_span(start, end, frame_rate, num_frames)  # the same frames as the ABX items'
        labels[first:last] = [phone] * (last - first)
    return labels


def phone_items(utt: str, segments: list[tuple[float, float, str]], speaker: str) -> list[Item]:
    """Triphone items of an utterance: every non-silence phone with a phone (silence included) on each
    side; a gap between segments counts as silence."""
    seq: list[tuple[float, float, str]] = []
    for start, end, phone in segments:
        if seq and start > seq[-1][1] + 1e-6 and seq[-1][2] != SIL and phone != SIL:
            seq.append((seq[-1][1], start, SIL))
        seq.append((start, end, phone))
    items = []
    for k in range(1, len(seq) - 1):
        start, end, phone = seq[k]
        if phone != SIL:
            items.append(Item(utt, start, end, phone, seq[k - 1][2], seq[k + 1][2], speaker))
    return items


def _check_frame_rate(units: dict[str, list[int]], ctm: dict, frame_rate: float, where: str) -> None:
    """The alignments must end within the units' duration (plus a frame) for most utterances, and not
    long before it: otherwise the frame rate does not describe these units."""
    ratios = []
    for utt, codes in units.items():
        ratios.append(ctm[utt][-1][1] / max(len(codes) / frame_rate, 1e-9))
    ratios = np.asarray(ratios)
    late = float(np.mean(ratios > 1.0 + 2.0 / max(frame_rate, 1e-9)))
    if late > 0.1 or float(np.median(ratios)) < 0.5:
        raise UserError(
            f"{where}: frame rate {frame_rate:g} Hz does not fit the alignments (alignment end / units duration: "
            f"median {np.median(ratios):.2f}, {late:.0%} of utterances end after their units); were these units "
            "extracted at another frame rate, or deduplicated?"
        )


def _heatmap(units: np.ndarray, phones: list[str], labels: np.ndarray, path: pathlib.Path, title: str) -> None:
    """Phone x unit co-occurrence, P(phone | unit) per column, units ordered by their most frequent phone."""
    import matplotlib.pyplot as plt

    from ..plots import heatmap_figure

    k = int(units.max()) + 1
    joint = np.zeros((len(phones), k))
    np.add.at(joint, (labels, units), 1.0)
    used = joint.sum(0) > 0
    joint = joint[:, used]
    cond = joint / joint.sum(0, keepdims=True)
    order = np.lexsort((-cond.max(0), cond.argmax(0)))
    fig = heatmap_figure(cond[:, order], phones, "units (ordered by their most frequent phone)", title)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def evaluate_units(
    units_dir: str | pathlib.Path,
    alignments: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    level: int = 0,
    data_dir: str | pathlib.Path | None = None,
    probe: bool = False,
    probe_train: str | pathlib.Path | None = None,
    seed: int = 0,
) -> dict:
    """Score one level of an ``extract-units`` dir against a phone CTM; write ``unit_quality.json``,
    ``RESULTS.md``, ``abx.item`` and ``phone_unit_heatmap.png`` into ``out_dir``. Returns the summary.

    Args:
        units_dir: written by ``vqaudio extract-units`` (not deduplicated).
        alignments: phone CTM, ``utt channel start dur phone``.
        level: residual level to score (0: the first).
        data_dir: Kaldi data dir whose ``utt2spk`` gives speakers (else the id's prefix before ``-``).
        probe: also train and test a small CTC phone recogniser on the units (``probe_per``): trained on the
            utterances of every fourth speaker's complement and tested on every fourth speaker (sorted by
            name), or, with ``probe_train``, trained on that units dir's aligned utterances (the same unit
            model's units of other speakers) and tested on all of these.
        seed: for the any-context subsample and the probe.
    """
    t0 = time.time()
    info = read_info(units_dir)
    if info.dedup:
        raise UserError(f"{units_dir}: deduplicated units have no frame timing; extract them without --dedup")
    if not 0 <= level < info.n_q:
        raise UserError(f"--level must lie in [0, {info.n_q - 1}] for {units_dir}, got {level}")
    table = {u: codes[level] for u, codes in read_levels(units_dir, level + 1).items()}
    ctm = read_ctm(alignments)
    common = sorted(u for u in table if u in ctm and table[u])
    missing = sorted(u for u in table if u not in ctm)
    if not common:
        raise UserError(f"no utterance of {units_dir} is in {alignments} (first units id: {next(iter(table), None)!r})")
    if missing:
        log.warning("%d utterances have no alignment and are skipped (first: %s)", len(missing), missing[0])
    units = {u: table[u] for u in common}
    _check_frame_rate(units, ctm, info.frame_rate, str(alignments))
    if not any(phone != SIL for u in common for _, _, phone in ctm[u]):
        raise UserError(
            f"{alignments}: every phone of the {len(common)} scored utterance(s) is silence "
            f"({', '.join(sorted(SILENCES))}); there is nothing to score"
        )
    utt2spk = None
    if data_dir is not None:
        utt2spk = read_utt2spk(data_dir)
        if utt2spk is None:
            raise UserError(
                f"--data {data_dir}: no speakers there (no utt2spk, or no supervision names one); omit --data to "
                "take speakers from the id prefix"
            )
    speakers = speakers_of(common, utt2spk)

    # frame-level statistics
    labels = {u: frame_phones(ctm[u], len(units[u]), info.frame_rate) for u in common}
    phones = sorted({p for ls in labels.values() for p in ls})
    phone_id = {p: i for i, p in enumerate(phones)}
    flat_units = np.concatenate([np.asarray(units[u], dtype=np.int64) for u in common])
    flat_phones = np.asarray([phone_id[p] for u in common for p in labels[u]], dtype=np.int64)
    stats = unit_phone_stats(flat_units, flat_phones)

    # ABX
    items = [it for u in common for it in phone_items(u, ctm[u], speakers[u])]
    frames = [
        np.asarray(units[it.utt], dtype=np.int64)[item_frames(it, info.frame_rate, len(units[it.utt]))] for it in items
    ]
    rng = np.random.default_rng(seed)
    by_phone_speaker: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n, it in enumerate(items):
        by_phone_speaker[(it.phone, it.speaker)].append(n)
    keep = sorted(
        n
        for members in by_phone_speaker.values()
        for n in (members if len(members) <= ANY_CONTEXT_CAP else rng.choice(members, ANY_CONTEXT_CAP, replace=False))
    )
    within, n_within = abx_error(items, frames, "within")
    across, n_across = abx_error(items, frames, "across")
    any_ctx, n_any = abx_error([items[n] for n in keep], [frames[n] for n in keep], "any")

    summary: dict = {
        "units": str(units_dir),
        "alignments": str(alignments),
        "level": level,
        "codebook_size": info.codebook_size,
        "frame_rate": info.frame_rate,
        "num_utterances": len(common),
        "num_skipped_no_alignment": len(missing),
        "num_speakers": len(set(speakers.values())),
        "num_frames": int(flat_units.size),
        "pnmi": stats["pnmi"],
        "phone_purity": stats["phone_purity"],
        "cluster_purity": stats["cluster_purity"],
        "unit_entropy_bits": stats["unit_entropy_bits"],
        "abx_within": within,
        "abx_across": across,
        "abx_phone_any_context": any_ctx,
        "num_abx_items": len(items),
        "num_abx_triplets": n_within + n_across + n_any,
        "num_abx_triplets_within": n_within,
        "num_abx_triplets_across": n_across,
        "num_abx_triplets_any_context": n_any,
    }
    if probe or probe_train is not None:
        from .probe import probe_per, speaker_split

        if probe_train is None:
            train, test = speaker_split(speakers)
            train_units, test_units = {u: units[u] for u in train}, {u: units[u] for u in test}
        else:
            other = read_info(probe_train)
            if other.model_checksum != info.model_checksum or other.dedup:
                raise UserError(f"{probe_train}: --probe-train needs units of the same model, not deduplicated")
            train_units = {u: c[level] for u, c in read_levels(probe_train, level + 1).items() if u in ctm and c[level]}
            train_units = {u: c for u, c in train_units.items() if u not in units}
            test_units = units
        summary.update(probe_per(train_units, test_units, ctm, info.codebook_size, info.frame_rate, seed=seed))
    summary["undefined"] = undefined_figures(summary)
    summary["seconds"] = round(time.time() - t0, 2)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_item_file(out / "abx.item", items)
    _heatmap(flat_units, phones, flat_phones, out / "phone_unit_heatmap.png", f"{units_dir} level {level}")
    atomic_write_text(out / "unit_quality.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    atomic_write_text(out / "RESULTS.md", results_markdown(summary))
    log.info("unit quality of %s: %s", units_dir, {k: v for k, v in summary.items() if isinstance(v, float)})
    return summary


# Why a figure can be undefined, by key (a figure with no item, triplet or frame to average over).
UNDEFINED_REASONS = {
    "abx_within": "no phone pair has two occurrences in one context of one speaker",
    "abx_across": "no phone pair is shared by two speakers in one context",
    "abx_phone_any_context": "no phone pair has occurrences of one speaker",
    "probe_per": "no test phones",
}


def undefined_figures(summary: dict) -> dict[str, str]:
    """Set every figure of ``summary`` that is not a finite number to ``None`` (JSON ``null``); returns
    ``{key: reason}`` for them."""
    reasons = {}
    for key, value in summary.items():
        if isinstance(value, float) and not math.isfinite(value):
            summary[key] = None
            reason = UNDEFINED_REASONS.get(key, "nothing to average over")
            if key == "abx_across" and summary.get("num_speakers", 2) < 2:
                reason = "one speaker only: ABX across speakers needs two"
            reasons[key] = reason
    return reasons


def results_markdown(summary: dict) -> str:
    rows = [
        ("PNMI (higher is better)", "pnmi", "{:.3f}"),
        ("phone purity (higher)", "phone_purity", "{:.3f}"),
        ("cluster purity (higher)", "cluster_purity", "{:.3f}"),
        ("ABX within speaker, % (lower)", "abx_within", "{:.2f}"),
        ("ABX across speakers, % (lower)", "abx_across", "{:.2f}"),
        ("ABX any context, within speaker, % (lower)", "abx_phone_any_context", "{:.2f}"),
        ("probe PER, % (lower)", "probe_per", "{:.1f}"),
        ("unit entropy (bits)", "unit_entropy_bits", "{:.2f}"),
    ]
    lines = [
        f"# Unit quality: {summary['units']}, level {summary['level']}",
        "",
        f"{summary['num_utterances']} utterances, {summary['num_speakers']} speakers, {summary['num_frames']} frames "
        f"at {summary['frame_rate']:g} Hz, K = {summary['codebook_size']}; alignments {summary['alignments']}"
        + (f"; {summary['num_skipped_no_alignment']} without alignment" if summary["num_skipped_no_alignment"] else ""),
        "",
        "| metric | value |",
        "|---|---:|",
    ]
    undefined = summary.get("undefined", {})
    lines += [
        f"| {label} | {fmt.format(summary[key]) if summary[key] is not None else 'n/a: ' + undefined.get(key, '')} |"
        for label, key, fmt in rows
        if key in summary
    ]
    return "\n".join(lines) + "\n"
