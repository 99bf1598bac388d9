"""Word and character error rates of pocketsphinx transcripts against reference text.

pocketsphinx 5.x ships an en-US acoustic model, language model and dictionary inside its wheel, so the
recogniser works offline. On read speech it is far from state of the art (about 45 % WER on LibriSpeech-like
utterances): compare a hypothesis with the WER of the original audio (the ceiling), not with zero.

Text normalisation, the same for the recogniser's output and the reference: upper case, every character other
than a letter, a digit or an apostrophe inside a word becomes a space, runs of spaces become one. Word errors
count over the words of that text, character errors over its characters, the single spaces between words
included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .packages import require

_NOT_WORD = re.compile(r"[^A-Z0-9']+")


def normalize_text(text: str) -> str:
    """Upper case, punctuation stripped (apostrophes inside words kept, as in LibriSpeech's ``DON'T``), single
    spaces."""
    words = _NOT_WORD.sub(" ", text.upper()).split()
    return " ".join(w.strip("'") for w in words if w.strip("'"))


@dataclass(frozen=True)
class EditCounts:
    """Levenshtein alignment counts of a hypothesis against a reference of ``ref_len`` tokens."""

    substitutions: int
    deletions: int
    insertions: int
    ref_len: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """errors / reference tokens; NaN for an empty reference (undefined)."""
        return self.errors / self.ref_len if self.ref_len else float("nan")

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.ref_len + other.ref_len,
        )


def edit_counts(ref: list | str, hyp: list | str) -> EditCounts:
    """Substitutions, deletions and insertions of a minimum-edit alignment of ``hyp`` to ``ref`` (sequences of
    tokens). Among alignments of equal cost, the backtrace prefers substitutions, then deletions."""
    n, m = len(ref), len(hyp)
    cost = np.zeros((n + 1, m + 1), dtype=np.int64)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        r = ref[i - 1]
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + (r != hyp[j - 1]), cost[i - 1, j] + 1, cost[i, j - 1] + 1)
    s = d = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            s += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            d, i = d + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return EditCounts(int(s), d, ins, n)


def word_errors(ref: str, hyp: str) -> EditCounts:
    """Word edit counts of two texts after :func:`normalize_text`."""
    return edit_counts(normalize_text(ref).split(), normalize_text(hyp).split())


def char_errors(ref: str, hyp: str) -> EditCounts:
    """Character edit counts of two texts after :func:`normalize_text` (spaces between words count)."""
    return edit_counts(normalize_text(ref), normalize_text(hyp))


class Recognizer:
    """pocketsphinx's bundled en-US recogniser on 16 kHz audio (``pip install 'vqaudio[eval]'``)."""

    sample_rate = 16000

    def __init__(self) -> None:
        pocketsphinx = require("pocketsphinx", "--asr (word error rate)")
        self.decoder = pocketsphinx.Decoder(samprate=self.sample_rate, loglevel="FATAL")

    def transcribe(self, wav: np.ndarray) -> str:
        """The normalised transcript of ``wav`` (float, 16 kHz, mono); empty when nothing is recognised."""
        wav = np.asarray(wav, dtype=np.float64).ravel()
        pcm = (np.clip(wav, -1.0, 1.0) * 32767).astype("<i2")
        self.decoder.start_utt()
        self.decoder.process_raw(pcm.tobytes(), full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return normalize_text(hyp.hypstr) if hyp is not None else ""
