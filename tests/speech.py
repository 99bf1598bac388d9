"""Real speech for tests: ../shared/data/speech-mini when present, else a generated corpus in its layout."""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile as sf

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "speech-mini"
SR = 16000


def synth_utterance(seconds: float, seed: int, sr: int = SR) -> np.ndarray:
    """Speech-like audio: a gliding harmonic voice with a syllable envelope plus breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 60 * rng.random() + 20 * np.sin(2 * np.pi * (0.5 + rng.random()) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * (3 + 2 * rng.random()) * t)) ** 2
    wav = 0.2 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.5 * wav / np.abs(wav).max()).astype(np.float32)


def make_corpus(
    root: pathlib.Path,
    split: str = "train-clean-5",
    speakers: int = 2,
    chapters: int = 1,
    utts: int = 3,
    seconds: float = 2.0,
) -> pathlib.Path:
    """Write a LibriSpeech-layout corpus: ``root/LibriSpeech/<split>/<spk>/<ch>/<spk>-<ch>-<utt>.flac``."""
    base = root / "LibriSpeech" / split
    for s in range(speakers):
        spk = str(100 + s)
        for c in range(chapters):
            ch = str(1000 + c)
            d = base / spk / ch
            d.mkdir(parents=True, exist_ok=True)
            lines = []
            for u in range(utts):
                uid = f"{spk}-{ch}-{u:04d}"
                sf.write(d / f"{uid}.flac", synth_utterance(seconds, seed=hash(uid) % 2**31), SR)
                lines.append(f"{uid} HELLO WORLD NUMBER {u}")
            (d / f"{spk}-{ch}.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def one_utterance(tmp_path: pathlib.Path) -> pathlib.Path:
    """Path of one real utterance (about 3-4 s), or a generated one when the shared corpus is absent."""
    real = SHARED / "LibriSpeech" / "dev-clean-2"
    files = sorted(real.rglob("*.flac")) if real.is_dir() else []
    if files:
        return files[0]
    path = tmp_path / "utt.flac"
    sf.write(path, synth_utterance(3.0, seed=1), SR)
    return path
