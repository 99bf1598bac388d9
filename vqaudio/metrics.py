"""Metrics over discrete units.

``unit_phone_stats`` measures how well frame-level units line up with frame-level phone labels:
phone purity (accuracy of mapping each unit to its most frequent phone), cluster purity, and
phone-normalised mutual information PNMI = I(phone; unit) / H(phone) (HuBERT, Hsu et al. 2021, sec. IV-E).
"""

from __future__ import annotations

import numpy as np


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def unit_phone_stats(units: np.ndarray, phones: np.ndarray) -> dict[str, float]:
    """Purity and PNMI of aligned frame sequences.

    Args:
        units: ``(N,)`` integer unit per frame.
        phones: ``(N,)`` integer phone label per frame, same frames.

    Returns:
        ``phone_purity``, ``cluster_purity``, ``pnmi``, ``unit_entropy_bits``.
    """
    units, phones = np.asarray(units).ravel(), np.asarray(phones).ravel()
    if units.shape != phones.shape:
        raise ValueError(f"units and phones must have the same length, got {units.shape[0]} and {phones.shape[0]}")
    if units.size == 0:
        raise ValueError("unit_phone_stats needs at least one frame, got none")
    _, u = np.unique(units, return_inverse=True)
    _, p = np.unique(phones, return_inverse=True)
    joint = np.zeros((u.max() + 1, p.max() + 1))
    np.add.at(joint, (u, p), 1.0)
    joint /= joint.sum()
    p_unit, p_phone = joint.sum(1), joint.sum(0)
    h_phone = _entropy(p_phone)
    mutual = h_phone + _entropy(p_unit) - _entropy(joint.ravel())
    return {
        "phone_purity": float(joint.max(1).sum()),
        "cluster_purity": float(joint.max(0).sum()),
        "pnmi": float(mutual / h_phone) if h_phone > 0 else 0.0,
        "unit_entropy_bits": _entropy(p_unit) / float(np.log(2)),
    }


def si_sdr(ref: np.ndarray, hyp: np.ndarray, eps: float = 1e-12) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019): projection of ``hyp`` on ``ref`` against the rest."""
    ref, hyp = _same_length(ref, hyp)
    ref = ref - ref.mean()
    hyp = hyp - hyp.mean()
    alpha = float(np.dot(hyp, ref) / (np.dot(ref, ref) + eps))
    target = alpha * ref
    noise = hyp - target
    return float(10 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


def _same_length(ref: np.ndarray, hyp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, hyp = np.asarray(ref, dtype=np.float64).ravel(), np.asarray(hyp, dtype=np.float64).ravel()
    if ref.size == 0 or hyp.size == 0:
        raise ValueError(f"empty signal: reference has {ref.size} samples, hypothesis {hyp.size}")
    n = min(ref.size, hyp.size)
    return ref[:n], hyp[:n]


def log_mel_distance(ref: np.ndarray, hyp: np.ndarray, sample_rate: int) -> float:
    """Mean L1 distance of log10 mel spectrograms (80 bands, 1024-point FFT, hop 256)."""
    import torch

    from .features import MelSpectrogram

    ref, hyp = _same_length(ref, hyp)
    mel = MelSpectrogram(sample_rate, n_fft=1024, hop=256, n_mels=80)
    with torch.no_grad():
        a = mel(torch.from_numpy(ref).float()[None, None])
        b = mel(torch.from_numpy(hyp).float()[None, None])
    return float((a - b).abs().mean())


def stft_distance(ref: np.ndarray, hyp: np.ndarray) -> float:
    """Multi-resolution STFT distance (spectral convergence + log magnitude L1, FFT 256/512/1024)."""
    import torch

    from .train.losses import MultiResolutionSTFTLoss

    ref, hyp = _same_length(ref, hyp)
    with torch.no_grad():
        return float(
            MultiResolutionSTFTLoss()(
                torch.from_numpy(hyp).float()[None, None], torch.from_numpy(ref).float()[None, None]
            )
        )


def stoi(ref: np.ndarray, hyp: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility (pystoi, Taal et al. 2011), in [0, 1]."""
    from pystoi import stoi as _stoi

    ref, hyp = _same_length(ref, hyp)
    return float(_stoi(ref, hyp, sample_rate, extended=False))


def pesq_wb(ref: np.ndarray, hyp: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2, via the ``pesq`` package) at 16 kHz; NaN when PESQ cannot score it
    (e.g. no speech detected), so one utterance never stops an evaluation."""
    import librosa
    from pesq import pesq as _pesq

    ref, hyp = _same_length(ref, hyp)
    if sample_rate != 16000:
        ref = librosa.resample(ref, orig_sr=sample_rate, target_sr=16000, res_type="soxr_hq")
        hyp = librosa.resample(hyp, orig_sr=sample_rate, target_sr=16000, res_type="soxr_hq")
    try:
        return float(_pesq(16000, ref, hyp, "wb"))
    except Exception:  # the pesq package raises its own error types for unscorable input
        return float("nan")


def unit_stats(units: list[np.ndarray] | list[list[int]], codebook_size: int) -> dict[str, float]:
    """Codebook usage (fraction of codes seen), unit entropy in bits and perplexity over a set of sequences."""
    flat = np.concatenate([np.asarray(u, dtype=np.int64).ravel() for u in units]) if units else np.zeros(0, int)
    if flat.size == 0:
        return {"usage": 0.0, "entropy_bits": 0.0, "perplexity": 1.0}
    counts = np.bincount(flat, minlength=codebook_size).astype(np.float64)
    p = counts / counts.sum()
    h = max(_entropy(p) / float(np.log(2)), 0.0)  # no "-0.0" for a single used code
    return {"usage": float((counts > 0).mean()), "entropy_bits": h, "perplexity": float(2**h)}
