"""Shared inputs of the unit-format tests: a tiny codec with random weights, real speech recordings
(speech-mini's dev-clean-2, else generated speech) and the same utterances as a Kaldi data dir."""

from __future__ import annotations

import pathlib

import numpy as np
import soundfile as sf
import torch

from vqaudio.models import Codec, CodecConfig
from vqaudio.quantize import QuantizerConfig

from .speech import SHARED, SR, synth_utterance


def tiny_codec_file(path: pathlib.Path, n_q: int = 2, codebook_size: int = 64) -> pathlib.Path:
    """A codec with random weights (320-sample hop, 50 frames per second) saved at ``path``."""
    torch.manual_seed(0)
    q = QuantizerConfig(kind="vq", n_q=n_q, codebook_size=codebook_size, kmeans_init=False, dead_code_threshold=0.0)
    cfg = CodecConfig(
        encoder="seanet", channels=4, encoder_channels=4, latent_dim=16, max_channels=32, quantizer=q, lstm=0
    )
    return Codec(cfg).eval().save_pretrained(path)


def recordings(tmp_path: pathlib.Path, count: int = 3) -> list[pathlib.Path]:
    """``count`` mono 16 kHz speech files: speech-mini's dev-clean-2 when present, else generated ones."""
    real = sorted((SHARED / "LibriSpeech" / "dev-clean-2").rglob("*.flac"))
    if len(real) >= count:
        return real[:count]
    paths = []
    for i in range(count):
        paths.append(tmp_path / f"rec{i}.flac")
        sf.write(paths[-1], synth_utterance(2.5 + 0.5 * i, seed=i), SR)
    return paths


def kaldi_dir(path: pathlib.Path, rows: list[tuple[str, str, str | None, str | None]]) -> pathlib.Path:
    """A Kaldi data dir of ``(utt, audio file, text or None, speaker or None)`` rows: ``wav.scp``, and ``text``
    and ``utt2spk`` for the rows that have them."""
    path.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: r[0].encode())
    (path / "wav.scp").write_text("".join(f"{u} {f}\n" for u, f, _, _ in rows))
    if any(t is not None for _, _, t, _ in rows):
        (path / "text").write_text("".join(f"{u} {t}\n" for u, _, t, _ in rows if t is not None))
    if any(s is not None for _, _, _, s in rows):
        (path / "utt2spk").write_text("".join(f"{u} {s}\n" for u, _, _, s in rows if s is not None))
    return path


def stereo_file(path: pathlib.Path, left: pathlib.Path, right: pathlib.Path) -> np.ndarray:
    """Write a two-channel float WAV of two speech files (the shorter zero-padded); returns its ``(T, 2)`` samples."""
    a, b = (sf.read(f, dtype="float32")[0] for f in (left, right))
    n = max(len(a), len(b))
    both = np.stack([np.pad(a, (0, n - len(a))), np.pad(b, (0, n - len(b)))], axis=1)
    sf.write(path, both, SR, subtype="FLOAT")
    return both
