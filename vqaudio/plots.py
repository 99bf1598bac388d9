"""Figures people would rather look at than read: spectrogram comparisons, code-usage histograms, quality curves."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def spectrogram_figure(mels: Sequence[np.ndarray], titles: Sequence[str]):
    """Stacked log-mel spectrograms ``(n_mels, frames)`` on one colour scale."""
    vmin = min(float(m.min()) for m in mels)
    vmax = max(float(m.max()) for m in mels)
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.2 * len(mels)), squeeze=False)
    for ax, mel, title in zip(axes[:, 0], mels, titles, strict=True):
        ax.imshow(mel, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
        ax.set_title(title)
        ax.set_ylabel("mel band")
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    return fig


def usage_histogram_figure(counts: np.ndarray, title: str):
    """Bar chart of code counts sorted by frequency, log scale: how evenly a codebook is used."""
    order = np.sort(np.asarray(counts))[::-1]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(order.size), np.maximum(order, 0.5), width=1.0, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("code rank")
    ax.set_ylabel("count")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def heatmap_figure(matrix: np.ndarray, row_labels: Sequence[str], xlabel: str, title: str):
    """A rows x columns matrix in [0, 1] (e.g. P(phone | unit)), one labelled row per entry."""
    fig, ax = plt.subplots(figsize=(12, max(4.0, 0.18 * len(row_labels))))
    image = ax.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_yticks(np.arange(len(row_labels)))
    ax.set_yticklabels(row_labels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def level_curves_figure(
    depths: Sequence[int],
    curves: dict[str, Sequence[float | None]],
    latent_error: Sequence,
    ceiling: dict[str, float | None] | None = None,
):
    """One panel per metric against the residual depth n_q, and the relative latent error against the level
    (from 0); ``None`` values are gaps. ``ceiling`` (per metric, optional): the unquantized latents' score, a
    dashed line."""
    ceiling = ceiling or {}
    panels = [(label, list(depths), values, "n_q", "tab:blue") for label, values in curves.items()]
    levels = list(range(len(latent_error)))
    panels.append(("relative latent error after the level (lower)", levels, latent_error, "level", "tab:red"))
    cols = 3
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (label, x, values, xlabel, color) in zip(axes.ravel(), panels, strict=False):
        ax.plot(x, [np.nan if v is None else v for v in values], marker="o", color=color)
        if ceiling.get(label) is not None:
            ax.axhline(ceiling[label], color="gray", ls="--", lw=1, label="unquantized")
            ax.legend(fontsize=7)
        ax.set_xticks(x)
        ax.set_xlabel(xlabel)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig
