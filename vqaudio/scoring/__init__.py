"""Scores from pretrained outside models: pocketsphinx word and character error rates (:mod:`.asr`),
Resemblyzer GE2E speaker similarity (:mod:`.speaker`), and gross pitch and voicing decision errors from
pYIN F0 tracks (:mod:`.pitch`). pocketsphinx and Resemblyzer come with ``pip install 'vqaudio[eval]'``;
each scorer says in one line what is missing when its package is absent."""

from __future__ import annotations

from .asr import EditCounts, Recognizer, char_errors, edit_counts, normalize_text, word_errors
from .packages import INSTALL, require
from .pitch import PitchErrors, f0_track, pitch_errors
from .speaker import SpeakerEncoder, conversion_similarity, cosine

__all__ = [
    "INSTALL",
    "EditCounts",
    "PitchErrors",
    "Recognizer",
    "SpeakerEncoder",
    "char_errors",
    "conversion_similarity",
    "cosine",
    "edit_counts",
    "f0_track",
    "normalize_text",
    "pitch_errors",
    "require",
    "word_errors",
]
