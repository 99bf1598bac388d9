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
