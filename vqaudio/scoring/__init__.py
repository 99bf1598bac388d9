"""Scores from pretrained outside models: pocketsphinx word and character error rates (:mod:`.asr`),
Resemblyzer GE2E speaker similarity (:mod:`.speaker`), and gross pitch and voicing decision errors from
pYIN F0 tracks (:mod:`.pitch`). pocketsphinx and Resemblyzer come with ``pip install 'vqaudio[eval]'``;
each scorer says in one line what is missing when its package is absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError
from .asr import EditCounts, Recognizer, char_errors, edit_counts, normalize_text, word_errors
from .pitch import PitchErrors, f0_track, pitch_errors
from .speaker import SpeakerEncoder, conversion_similarity, cosine

INSTALL = "pip install 'vqaudio[eval]'"


def require(module: str, score: str) -> ModuleType:
    """Import ``module`` for ``score``, or raise a one-line :class:`UserError` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"{score} needs the {module} package ({err}): {INSTALL}") from None


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
