"""Evaluation of resynthesized audio against references: per-utterance CSV, metrics.json, RESULTS.md, plots."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import pathlib
from importlib.metadata import version

import numpy as np
from tqdm import tqdm

from . import metrics
from .data.audio import AudioError, load_audio
from .data.kaldi import read_data_dir, read_table, read_text, read_utt2spk, speakers_of
from .errors import UserError
from .fileio import atomic_write_text, check_writable, path_inside
from .plots import spectrogram_figure, usage_histogram_figure
from .units.formats import read_info, read_levels

log = logging.getLogger(__name__)
COLUMNS = ("log_mel_distance", "stft_distance", "si_sdr", "stoi", "pesq_wb")
UNQUANTIZED = "unquantized"  # the per_utterance.csv n_q of the decoder fed the encoder's own latents
PLACEHOLDERS = ("UNKNOWN", "<UNK>")  # what corpora write where an utterance has no transcript
ASR_NUMBERS = (
    "wer",
    "cer",
    "wer_reference",
    "cer_reference",
    "ref_words",
    "word_errors",
    "word_errors_reference",
    "ref_chars",
    "char_errors",
    "char_errors_reference",
)
LABELS = {
    "log_mel_distance": "log-mel distance (lower is better)",
    "stft_distance": "MR-STFT distance (lower)",
    "si_sdr": "SI-SDR dB (higher)",
    "stoi": "STOI (higher)",
    "pesq_wb": "PESQ wide-band (higher)",
    "bitrate_bps": "bitrate (bit/s)",
    "token_rate": "tokens per second",
    "codebook_usage": "codebook usage (level 0)",
    "unit_entropy_bits": "unit entropy (bits, level 0)",
    "wer": "word error rate, pocketsphinx (lower)",
    "wer_reference": "word error rate of the references, pocketsphinx (the ceiling)",
    "cer": "character error rate, pocketsphinx (lower)",
    "cer_reference": "character error rate of the references (the ceiling)",
    "speaker_similarity": "speaker similarity, GE2E cosine to the speaker's other utterances (conversions: the "
    "target's) (higher)",
    "speaker_similarity_reference": "speaker similarity of the references (the ceiling)",
    "speaker_similarity_source": "conversions: speaker similarity to the source speaker (lower)",
    "conversion_closer_to_target": "conversions closer to the target voice than to the source (share)",
    "conversion_margin": "conversions: similarity to the target minus to the source (higher)",
    "gross_pitch_error": "gross pitch error, pYIN F0 off by > 20 % (lower)",
    "voicing_decision_error": "voicing decision error (lower)",
}


def evaluate(
    ref: str | pathlib.Path,
    hyp: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    units: str | pathlib.Path | None = None,
    sample_rate: int = 16000,
    num_plots: int = 3,
    progress: bool = True,
    asr: bool = False,
    speaker_sim: bool = False,
    f0: bool = False,
) -> dict:
    """Score every utterance of ``hyp`` (a dir with ``wav.scp``) against the Kaldi data dir ``ref``.

    Writes ``per_utterance.csv``, ``metrics.json`` (means; bitrate, token rate, codebook usage and unit
    entropy when ``units`` is given), ``RESULTS.md``, ``spectrogram_<utt>.png`` and ``code_usage.png``.

    With ``asr``, pocketsphinx transcribes hypotheses and references: ``wer``/``cer`` of the hypotheses and
    ``wer_reference``/``cer_reference`` of the original audio (the ceiling) against ``ref/text``, totals of
    edit errors over totals of reference words (characters). A reference text that is not a transcript (empty,
    or a placeholder such as ``UNKNOWN``) is left out of them, counted in ``asr_no_transcript``. With
    ``speaker_sim``, ``speaker_similarity`` is the mean GE2E cosine of each hypothesis to the mean embedding of
    its speaker's other reference utterances (``ref/utt2spk``, else the id's prefix before ``-``); a hypothesis
    whose speaker has no other utterance could only be compared with its own reference, so it is left out,
    counted in ``speaker_similarity_self_reference``; ``speaker_similarity_reference`` is the same figure for the
    references themselves. With ``f0``, ``gross_pitch_error`` and
    ``voicing_decision_error`` of the hypotheses' pYIN F0 against the references' (frame totals). These need
    ``pip install 'vqaudio[eval]'`` (pocketsphinx, Resemblyzer); undefined figures are ``null``.

    Voice conversions (``vqaudio convert --data``) are hypotheses whose ``hyp`` dir has ``utt2target`` (``utt
    target_speaker``): their ``speaker_similarity`` is to the target speaker's reference utterances (those in
    ``hyp/utt2reference``, the clips the conversion copied the voice from, left out), ``speaker_similarity_source``
    to the source speaker's other utterances; a conversion whose target speaker has no utterance but the copied
    references is left out (counted in ``speaker_similarity_self_reference`` too); the summary adds
    ``conversion_closer_to_target`` (the share of conversions closer to the target than to the source) and
    ``conversion_margin`` (the mean difference). Their F0 is not compared with the source's (another voice).

    ``metrics.json`` gives under ``utterances`` how many utterances each figure rests on; ``RESULTS.md`` shows it
    beside each figure.
    """
    import matplotlib.pyplot as plt

    conversions, copied = _conversions(pathlib.Path(hyp))
    # packages and transcripts checked before anything is written
    scorers = _Scorers(ref, asr, speaker_sim, f0, conversions, copied)
    out = pathlib.Path(out_dir)
    check_writable(out)
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
        row = {"utt": utt, "seconds": r.shape[0] / sample_rate, **score(r, h, sample_rate)}
        row.update(scorers.score(utt, _at_16k(r, sample_rate), _at_16k(h, sample_rate)))
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
    scorers.finish(rows, refs, sample_rate, progress)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["utt", "seconds", *COLUMNS, *scorers.columns])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "per_utterance.csv", buf.getvalue())
    summary: dict = {
        "num_utterances": len(rows),
        "num_missing": len(missing),
        "hours": sum(r["seconds"] for r in rows) / 3600,
    }
    counts: dict[str, int] = {}
    for c in COLUMNS:
        values = [r[c] for r in rows if not math.isnan(r[c])]
        summary[c] = float(np.mean(values)) if values else float("nan")
        counts[c] = len(values)
    summary.update(scorers.summary(rows, counts))
    summary["utterances"] = counts
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
        counts.update(dict.fromkeys(("bitrate_bps", "token_rate", "codebook_usage", "unit_entropy_bits"), len(level0)))
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


def score(ref: np.ndarray, hyp: np.ndarray, sample_rate: int) -> dict[str, float]:
    """The columns of :data:`COLUMNS` for one reference and its resynthesis."""
    return {
        "log_mel_distance": metrics.log_mel_distance(ref, hyp, sample_rate),
        "stft_distance": metrics.stft_distance(ref, hyp),
        "si_sdr": metrics.si_sdr(ref, hyp),
        "stoi": metrics.stoi(ref, hyp, sample_rate),
        "pesq_wb": metrics.pesq_wb(ref, hyp, sample_rate),
    }


def _at_16k(wav: np.ndarray, sample_rate: int) -> np.ndarray:
    """The outside models (pocketsphinx, Resemblyzer, the pYIN settings) take 16 kHz audio."""
    if sample_rate == 16000:
        return wav
    import librosa

    return librosa.resample(wav, orig_sr=sample_rate, target_sr=16000)


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _conversions(hyp: pathlib.Path) -> tuple[dict[str, str], set[str]]:
    """``hyp/utt2target`` (conversion -> target speaker) and the utterances of ``hyp/utt2reference`` (the
    references the conversions copied), empty where ``hyp`` has none."""
    folder = hyp if hyp.is_dir() else hyp.parent
    targets = read_table(folder / "utt2target") if (folder / "utt2target").is_file() else {}
    copied = set(read_table(folder / "utt2reference").values()) if (folder / "utt2reference").is_file() else set()
    return targets, copied


class _Scorers:
    """The optional scores of :func:`evaluate` (``--asr``, ``--speaker-sim``, ``--f0``): per-utterance columns
    while the audio is loaded, speaker similarities once every embedding is known, corpus figures at the end."""

    def __init__(
        self,
        ref: str | pathlib.Path,
        asr: bool,
        speaker_sim: bool,
        f0: bool,
        conversions: dict[str, str] | None = None,
        copied: set[str] | None = None,
    ) -> None:
        from . import scoring

        ref = pathlib.Path(ref)
        self.asr = scoring.Recognizer() if asr else None
        self.encoder = scoring.SpeakerEncoder() if speaker_sim else None
        self.f0 = f0
        self.texts: dict[str, str] = {}
        if asr:
            texts = read_text(ref)
            if texts is None:
                raise UserError(f"{ref}: no transcripts (a text file, or supervisions with text) for --asr to score")
            self.texts = texts
        self.utt2spk = read_utt2spk(ref)
        self.ref_embeddings: dict[str, np.ndarray] = {}
        self.hyp_embeddings: dict[str, np.ndarray] = {}
        self.pitch: dict[str, scoring.PitchErrors] = {}
        self.words: dict[str, tuple] = {}
        self.no_transcript: set[str] = set()
        self.self_reference = 0
        self.conversions = conversions or {}
        self.copied = copied or set()
        self.columns: list[str] = []
        if asr:
            self.columns += [*ASR_NUMBERS, "asr_text", "asr_text_reference"]
        if speaker_sim:
            self.columns += ["speaker", "speaker_similarity", "speaker_similarity_reference"]
            if self.conversions:
                self.columns += ["target_speaker", "speaker_similarity_source"]
        if f0:
            self.columns += ["gross_pitch_error", "voicing_decision_error"]

    def score(self, utt: str, ref: np.ndarray, hyp: np.ndarray) -> dict:
        from . import scoring

        row: dict = {}
        if self.asr is not None:
            text = self.texts.get(utt)
            if text is None or not is_transcript(text):
                why = (
                    "not in the reference text"
                    if text is None
                    else f"its reference text {text.strip()!r} is no transcript"
                )
                log.warning("%s: %s; no word error rate", utt, why)
                self.no_transcript.add(utt)
                row.update({**dict.fromkeys(ASR_NUMBERS, float("nan")), "asr_text": "", "asr_text_reference": ""})
            else:
                heard, heard_ref = self.asr.transcribe(hyp), self.asr.transcribe(ref)
                row.update({"asr_text": heard, "asr_text_reference": heard_ref})
                w, wr = scoring.word_errors(text, heard), scoring.word_errors(text, heard_ref)
                c, cr = scoring.char_errors(text, heard), scoring.char_errors(text, heard_ref)
                self.words[utt] = (w, wr, c, cr)
                row.update(
                    {
                        "wer": w.rate,
                        "cer": c.rate,
                        "wer_reference": wr.rate,
                        "cer_reference": cr.rate,
                        "ref_words": w.ref_len,
                        "word_errors": w.errors,
                        "word_errors_reference": wr.errors,
                        "ref_chars": c.ref_len,
                        "char_errors": c.errors,
                        "char_errors_reference": cr.errors,
                    }
                )
        if self.encoder is not None:
            for table, wav, name in (
                (self.ref_embeddings, ref, utt),
                (self.hyp_embeddings, hyp, f"{utt} (hypothesis)"),
            ):
                try:
                    table[utt] = self.encoder.embed(wav, name=name)
                except UserError as err:
                    log.warning("no speaker embedding: %s", err)
        if self.f0 and utt in self.conversions:  # another voice: its F0 is not the source's to match
            row.update({"gross_pitch_error": float("nan"), "voicing_decision_error": float("nan")})
        elif self.f0:
            counts = scoring.pitch_errors(scoring.f0_track(ref), scoring.f0_track(hyp))
            self.pitch[utt] = counts
            row.update(
                {
                    "gross_pitch_error": counts.gross_pitch_error,
                    "voicing_decision_error": counts.voicing_decision_error,
                }
            )
        return row

    def finish(self, rows: list[dict], refs: dict, sample_rate: int, progress: bool) -> None:
        """Speaker similarities: embed the references that were not scored, then compare each hypothesis (and
        each reference) with the mean embedding of its speaker's other reference utterances."""
        if self.encoder is None:
            return
        from .scoring.speaker import cosine, mean_embedding

        speakers = speakers_of(sorted(refs), self.utt2spk)
        if self.utt2spk is None:
            log.info("no utt2spk in the reference data dir: speakers are the utterance ids' prefixes before '-'")
        wanted = {speakers[r["utt"]] for r in rows} | {
            self.conversions[r["utt"]] for r in rows if r["utt"] in self.conversions
        }
        unknown = sorted(wanted - set(speakers.values()))
        if unknown:
            raise UserError(f"utt2target names speaker {unknown[0]!r}, who has no utterance in the reference data dir")
        tried = {r["utt"] for r in rows}
        todo = [u for u in sorted(refs) if speakers[u] in wanted and u not in tried]
        for utt in tqdm(todo, desc="speaker embeddings", unit="utt", disable=not progress or not todo):
            u = refs[utt]
            try:
                wav = _at_16k(load_audio(u.source, sample_rate, u.start, u.end, name=utt), sample_rate)
                self.ref_embeddings[utt] = self.encoder.embed(wav, name=utt)
            except (AudioError, UserError) as err:
                log.warning("no speaker embedding: %s", err)
        by_speaker: dict[str, list[str]] = {}
        for utt in sorted(self.ref_embeddings):
            by_speaker.setdefault(speakers[utt], []).append(utt)
        for row in rows:
            utt, spk = row["utt"], speakers[row["utt"]]
            others = [u for u in by_speaker.get(spk, []) if u != utt]
            target = mean_embedding([self.ref_embeddings[u] for u in others]) if others else None
            row["speaker"] = spk
            row["speaker_similarity_reference"] = (
                cosine(self.ref_embeddings[utt], target)
                if target is not None and utt in self.ref_embeddings
                else float("nan")
            )
            hyp = self.hyp_embeddings.get(utt)
            if utt in self.conversions:
                row["target_speaker"] = goal = self.conversions[utt]
                row["speaker_similarity_source"] = (
                    cosine(hyp, target) if hyp is not None and target is not None else float("nan")
                )
                voice = [u for u in by_speaker.get(goal, []) if u not in self.copied]
                if not voice and by_speaker.get(goal):  # only the clip the voice was copied from: no measure
                    log.warning("%s: target speaker %s has no utterance but the copied reference; left out", utt, goal)
                    self.self_reference += 1
                target = mean_embedding([self.ref_embeddings[u] for u in voice]) if voice else None
            elif target is None and utt in self.ref_embeddings:  # only its own reference: no measure
                self.self_reference += 1
            row["speaker_similarity"] = cosine(hyp, target) if hyp is not None and target is not None else float("nan")

    def summary(self, rows: list[dict], counts: dict[str, int]) -> dict:
        """The corpus figures; ``counts`` receives how many utterances each rests on."""
        from .scoring import EditCounts, PitchErrors

        out: dict = {}
        scored = {r["utt"] for r in rows}
        used = [("pocketsphinx", self.asr), ("resemblyzer", self.encoder), ("librosa", self.f0 or None)]
        scorers = {name: version(name) for name, on in used if on is not None}  # named beside their scores
        if scorers:
            out["scorers"] = scorers
        if self.asr is not None:
            words = [v for u, v in self.words.items() if u in scored]
            totals = [sum((c[i] for c in words), EditCounts(0, 0, 0, 0)) for i in range(4)]
            out.update(
                {
                    "wer": _nan_to_none(totals[0].rate),
                    "cer": _nan_to_none(totals[2].rate),
                    "wer_reference": _nan_to_none(totals[1].rate),
                    "cer_reference": _nan_to_none(totals[3].rate),
                    "asr_utterances": len(words),
                    "asr_reference_words": totals[0].ref_len,
                    "asr_no_transcript": len(self.no_transcript & scored),
                }
            )
            counts.update(dict.fromkeys(("wer", "cer", "wer_reference", "cer_reference"), len(words)))
        if self.encoder is not None:
            for key in ("speaker_similarity", "speaker_similarity_reference"):
                values = [r[key] for r in rows if not math.isnan(r[key])]
                out[key] = float(np.mean(values)) if values else None
                counts[key] = len(values)
            out["speaker_similarity_unscored"] = sum(math.isnan(r["speaker_similarity"]) for r in rows)
            out["speaker_similarity_self_reference"] = self.self_reference
            pairs = [
                (r["speaker_similarity"], r["speaker_similarity_source"])
                for r in rows
                if r["utt"] in self.conversions
                and not math.isnan(r["speaker_similarity"])
                and not math.isnan(r["speaker_similarity_source"])
            ]
            if self.conversions:
                # SECS to the target and to the source: the usual voice-conversion figures (e.g. Polyak et al. 2021)
                out["conversions"] = len(pairs)
                # conversions without a SECS to the target or to the source (a speaker with no other utterance)
                out["conversions_unscored"] = sum(r["utt"] in self.conversions for r in rows) - len(pairs)
                out["speaker_similarity_source"] = float(np.mean([p[1] for p in pairs])) if pairs else None
                out["conversion_closer_to_target"] = float(np.mean([t > s for t, s in pairs])) if pairs else None
                out["conversion_margin"] = float(np.mean([t - s for t, s in pairs])) if pairs else None
                counts.update(
                    dict.fromkeys(
                        ("speaker_similarity_source", "conversion_closer_to_target", "conversion_margin"), len(pairs)
                    )
                )
        if self.f0:
            pitched = [v for u, v in self.pitch.items() if u in scored]
            counts.update(dict.fromkeys(("gross_pitch_error", "voicing_decision_error"), len(pitched)))
            total = sum(pitched, PitchErrors(0, 0, 0, 0))
            out.update(
                {
                    "gross_pitch_error": _nan_to_none(total.gross_pitch_error),
                    "voicing_decision_error": _nan_to_none(total.voicing_decision_error),
                }
            )
        return out


def is_transcript(text: str) -> bool:
    """Whether a reference text can be scored: not empty and not a placeholder (:data:`PLACEHOLDERS`)."""
    return bool(text.strip()) and text.strip().upper() not in PLACEHOLDERS


def results_markdown(summary: dict, hyp: pathlib.Path) -> str:
    names = LABELS
    lines = [
        f"# Results: {hyp.parent}",
        "",
        f"{summary['num_utterances']} utterances, {summary['hours'] * 60:.1f} min of audio"
        + (f", {summary['num_missing']} without a hypothesis" if summary["num_missing"] else ""),
        "",
        "| metric | value | utterances |",
        "|---|---:|---:|",
    ]
    counts = summary.get("utterances", {})
    lines += [
        f"| {label} | {'n/a' if summary[key] is None else format(summary[key], '.3f')} | {counts.get(key, '')} |"
        for key, label in names.items()
        if key in summary
    ]
    if summary.get("scorers"):
        models = {"pocketsphinx": "en-US model", "resemblyzer": "GE2E encoder", "librosa": "pYIN F0"}
        scorers = ", ".join(f"{name} {v} ({models[name]})" for name, v in summary["scorers"].items())
        lines += ["", f"scored with {scorers}"]
    if summary.get("asr_no_transcript"):
        lines += [
            "",
            "utterances left out of the error rates, their reference text no transcript (missing, empty or a "
            f"placeholder such as UNKNOWN): {summary['asr_no_transcript']}",
        ]
    if summary.get("speaker_similarity_self_reference"):
        lines += [
            "",
            "hypotheses left out of the speaker similarity, their (target) speaker having no other reference "
            f"utterance than the one compared or copied: {summary['speaker_similarity_self_reference']}",
        ]
    if summary.get("speaker_similarity_unscored"):
        lines += [
            "",
            f"hypotheses without a speaker similarity (see the log): {summary['speaker_similarity_unscored']}",
        ]
    if summary.get("conversions_unscored"):
        lines += [
            "",
            "conversions left out of the conversion figures, without a similarity to the target or to the source "
            f"(a speaker with no other utterance): {summary['conversions_unscored']}",
        ]
    return "\n".join(lines) + "\n"


SHORT_LABELS = {
    "log_mel_distance": "log-mel",
    "stft_distance": "MR-STFT",
    "si_sdr": "SI-SDR dB",
    "stoi": "STOI",
    "pesq_wb": "PESQ",
}


def default_depths(n_q: int) -> list[int]:
    """1, 2, 4, ... up to ``n_q``, and ``n_q`` itself."""
    depths = [1]
    while depths[-1] * 2 <= n_q:
        depths.append(depths[-1] * 2)
    return depths if depths[-1] == n_q else [*depths, n_q]


def evaluate_levels(
    model: str | pathlib.Path,
    data: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    n_q: list[int] | None = None,
    device: str = "cpu",
    num_plots: int = 3,
    progress: bool = True,
) -> dict:
    """Resynthesize every utterance of the Kaldi data dir ``data`` with the codec ``model`` at each depth of
    ``n_q`` (default 1, 2, 4, ... up to the codec's n_q) and score each against the original.

    Each utterance is encoded once at full depth; depth q decodes its first q levels (residual codes are
    chosen greedily, so they are the codes an encoder keeping q levels writes). Writes ``metrics.json``
    (``by_n_q``: bitrate and the means of :data:`COLUMNS` per depth; ``unquantized``: the same means for the
    decoder fed the encoder's own latents, the ceiling no depth can pass; ``latent_error``: the mean over utterances
    of ``||z - sum of the first q levels|| / ||z||`` for q = 1..n_q; ``usage_by_level`` and
    ``perplexity_by_level``: code use of each level over the data), ``RESULTS.md`` (a table per depth, one
    per level), ``quality_by_n_q.png`` (the curves), ``per_utterance.csv`` (a row per utterance and depth, and
    one with ``n_q`` = ``unquantized``),
    ``latent_error.csv`` (a row per utterance), ``spectrogram_<utt>.png`` and ``evaluate.log``.
    """
    import matplotlib.pyplot as plt
    import torch

    from .features import MelSpectrogram
    from .models.codec import Codec
    from .plots import level_curves_figure
    from .quantize.residual import latent_errors

    codec = Codec.from_pretrained(model, map_location=device).to(device).eval()
    depths = default_depths(codec.n_q) if n_q is None else sorted(set(n_q))
    bad = [q for q in depths if not 1 <= q <= codec.n_q]
    if bad:
        raise UserError(f"--n-q values must lie in [1, {codec.n_q}] for {model}, got {bad[0]}")
    utts = sorted(read_data_dir(data), key=lambda u: u.utt_id.encode())
    if not utts:
        raise UserError(f"{data}: no utterances")
    out = pathlib.Path(out_dir)
    check_writable(out)
    handler = logging.FileHandler(out / "evaluate.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("vqaudio")
    level = package.level
    package.addHandler(handler)
    package.setLevel(min(package.getEffectiveLevel(), logging.INFO))
    try:
        sr, top = codec.sample_rate, codec.n_q
        log.info("evaluating %s on %s at n_q %s", model, data, depths)
        mel = MelSpectrogram(sr, n_fft=1024, hop=256, n_mels=80)
        rows, scored, errors, failed, seconds = [], [], [], 0, 0.0
        counts = np.zeros((top, codec.codebook_size), dtype=np.int64)
        for u in tqdm(utts, desc="evaluate", unit="utt", disable=not progress):
            try:
                r = load_audio(u.source, sr, u.start, u.end, name=u.utt_id)
            except AudioError as err:
                log.warning("skipping %s: %s", u.utt_id, err)
                failed += 1
                continue
            wav = torch.from_numpy(r)[None, None].to(device)
            with torch.no_grad():
                z = codec.level0(wav, quantize=False)
                codes = codec.quantizer.encode(z) if top > 1 else codec.quantizer.encode(z)[:, None]
                error = latent_errors(codec.quantizer, z, codes)[0].cpu().numpy()
                hyps = {q: codec.decode_utterance(codes[0, :q], length=r.shape[0]).cpu().numpy() for q in depths}
                ceiling = codec(wav, quantize=False).wav[0, 0].float().clamp(-1, 1).cpu().numpy()
            seconds += r.shape[0] / sr
            scored.append(u.utt_id)
            errors.append(error)
            for level in range(top):
                counts[level] += np.bincount(codes[0, level].cpu().numpy(), minlength=codec.codebook_size)
            for q, hyp in [*hyps.items(), (UNQUANTIZED, ceiling)]:
                rows.append({"utt": u.utt_id, "n_q": q, "seconds": r.shape[0] / sr, **score(r, hyp, sr)})
            if len(errors) <= num_plots:
                with torch.no_grad():
                    mels = [mel(torch.from_numpy(x)[None, None]).squeeze(0).numpy() for x in (r, *hyps.values())]
                titles = [f"{u.utt_id} reference", *(f"n_q = {q}" for q in depths)]
                fig = spectrogram_figure(mels, titles)
                fig.savefig(path_inside(out, f"spectrogram_{u.utt_id}", ".png"), dpi=100)
                plt.close(fig)
        if not errors:
            raise UserError(f"no utterance of {data} could be read (see {out / 'evaluate.log'})")
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["utt", "n_q", "seconds", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(out / "per_utterance.csv", buf.getvalue())
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["utt", *(f"latent_error_q{q}" for q in range(1, top + 1))])
        writer.writerows([utt, *(float(e) for e in error)] for utt, error in zip(scored, errors, strict=True))
        atomic_write_text(out / "latent_error.csv", buf.getvalue())
        by_n_q = {}
        for q in [*depths, UNQUANTIZED]:
            at_q = [r for r in rows if r["n_q"] == q]
            entry = {"bitrate_bps": codec.bitrate * q / top} if q != UNQUANTIZED else {}
            for c in COLUMNS:
                values = [r[c] for r in at_q if not math.isnan(r[c])]
                entry[c] = _nan_to_none(float(np.mean(values))) if values else None
            by_n_q[str(q)] = entry
        unquantized = by_n_q.pop(UNQUANTIZED)
        errors = np.stack(errors)
        summary = {
            "model": str(model),
            "data": str(data),
            "num_utterances": len(errors),
            "num_failed": failed,
            "hours": seconds / 3600,
            "sample_rate": sr,
            "frame_rate": codec.frame_rate,
            "n_q": top,
            "codebook_size": codec.codebook_size,
            "by_n_q": by_n_q,
            "unquantized": unquantized,
            "latent_error": [_nan_to_none(float(np.nanmean(e))) if not np.isnan(e).all() else None for e in errors.T],
            "usage_by_level": [float((c > 0).mean()) for c in counts],
            "perplexity_by_level": [_perplexity(c) for c in counts],
        }
        fig = level_curves_figure(
            depths,
            {LABELS[c]: [by_n_q[str(q)][c] for q in depths] for c in COLUMNS},
            summary["latent_error"],
            ceiling={LABELS[c]: unquantized[c] for c in COLUMNS},
        )
        fig.savefig(out / "quality_by_n_q.png", dpi=100)
        plt.close(fig)
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(out / "RESULTS.md", levels_markdown(summary))
        log.info("evaluated %d utterances at n_q %s; latent error %s", len(errors), depths, summary["latent_error"])
    finally:
        package.removeHandler(handler)
        package.setLevel(level)
        handler.close()
    return summary


def _perplexity(counts: np.ndarray) -> float:
    """exp(entropy) of the code distribution ``counts`` (K,), as the quantizers' training metric."""
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _cell(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def levels_markdown(summary: dict) -> str:
    """RESULTS.md of :func:`evaluate_levels`: a row per depth, a row per level, the curves' PNG."""
    lines = [
        f"# Results by depth: {summary['model']} on {summary['data']}",
        "",
        f"{summary['num_utterances']} utterances, {summary['hours'] * 60:.1f} min of audio"
        + (f", {summary['num_failed']} unreadable" if summary["num_failed"] else "")
        + f"; {summary['n_q']} levels of {summary['codebook_size']} codes at {summary['frame_rate']:g} frames/s",
        "",
        "| n_q | " + " | ".join(["bit/s", *(SHORT_LABELS[c] for c in COLUMNS)]) + " |",
        "|---:" * (len(COLUMNS) + 2) + "|",
    ]
    for q, entry in summary["by_n_q"].items():
        lines.append(f"| {q} | {entry['bitrate_bps']:.0f} | " + " | ".join(_cell(entry[c]) for c in COLUMNS) + " |")
    ceiling = summary.get("unquantized")
    if ceiling:
        lines.append("| unquantized | | " + " | ".join(_cell(ceiling[c]) for c in COLUMNS) + " |")
    lines += [
        "",
        "log-mel and MR-STFT distances: lower is better; SI-SDR, STOI and wide-band PESQ: higher is better.",
        "unquantized: the decoder fed the encoder's own latents, the ceiling no depth can pass; where the depths"
        " reach it, more bits cannot buy more until the encoder and decoder improve.",
        "",
        "| level | relative latent error after levels 0..level (lower) | code usage | perplexity |",
        "|---:|---:|---:|---:|",
    ]
    for level, (error, usage, perplexity) in enumerate(
        zip(summary["latent_error"], summary["usage_by_level"], summary["perplexity_by_level"], strict=True)
    ):
        lines.append(f"| {level} | {_cell(error)} | {usage:.3f} | {perplexity:.1f} |")
    lines += ["", "![metrics against n_q, latent error against level](quality_by_n_q.png)"]
    return "\n".join(lines) + "\n"
