"""ABX phone discriminability of frame representations (Schatz et al. 2013), as Libri-light and ZeroSpeech 2021
compute it: items are phone occurrences; an (A, B, X) triplet scores 1 when X (same phone as A) is closer to
A than to B, 0.5 on a tie; the distance between two items is the DTW alignment cost of their frames,
averaged along the path, with the angular distance ``arccos(cos) / pi`` between frames (for one-hot units:
0 for the same unit, 0.5 for different ones). The error is ``1 - score``, in percent.

Modes:
- ``within``: A, B, X share the speaker and the phone context (previous and next phone); A and B differ in
  their central phone.
- ``across``: as ``within``, but X comes from another speaker than A and B.
- ``any``: within speaker, context ignored (``abx_phone_any_context``).

Scores are averaged per cell (A's phone, B's phone, context, speaker(s)), then over contexts, then over
speakers, then over phone pairs, as ABXpy and Libri-light average them. An item file in the Libri-light /
fastabx format (:func:`write_item_file`) lets anyone rescore the same items with fastabx.
"""

from __future__ import annotations

import itertools
import pathlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..fileio import atomic_write_text

MODES = ("within", "across", "any")


@dataclass(frozen=True)
class Item:
    """One phone occurrence: its utterance, time span in seconds, phone, neighbours and speaker."""

    utt: str
    onset: float
    offset: float
    phone: str
    prev: str
    next: str
    speaker: str


def write_item_file(path: str | pathlib.Path, items: list[Item]) -> pathlib.Path:
    """``#file onset offset #phone prev-phone next-phone speaker`` (Libri-light / fastabx item file)."""
    lines = ["#file onset offset #phone prev-phone next-phone speaker"]
    lines += [f"{i.utt} {i.onset:.4f} {i.offset:.4f} {i.phone} {i.prev} {i.next} {i.speaker}" for i in items]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def frame_span(start: float, end: float, frame_rate: float, num_frames: int) -> tuple[int, int]:
    """``(first, last)``: the frames ``first ... last - 1`` whose centres ``(i + 0.5) / frame_rate`` lie in
    ``[start, end)`` seconds, within ``num_frames`` (empty when none does)."""
    first = max(0, int(np.ceil(start * frame_rate - 0.5)))
    return first, max(first, min(num_frames, int(np.ceil(end * frame_rate - 0.5))))


def item_frames(item: Item, frame_rate: float, num_frames: int) -> slice:
    """The item's frames (:func:`frame_span`); at least the frame that holds its midpoint."""
    first, last = frame_span(item.onset, item.offset, frame_rate, num_frames)
    if last == first:
        mid = min(int((item.onset + item.offset) / 2 * frame_rate), num_frames - 1)
        return slice(mid, mid + 1)
    return slice(first, last)


def _frame_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular frame distances of item batches: ``(G, la)`` ints (units) or ``(G, la, D)`` floats against
    ``(G, lb)`` / ``(G, lb, D)`` -> ``(G, la, lb)``."""
    if a.ndim == 2:  # one-hot units: orthogonal unless equal
        return 0.5 * (a[:, :, None] != b[:, None, :])
    na = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    cos = np.einsum("gid,gjd->gij", na, nb)
    return np.arccos(np.clip(cos, -1.0, 1.0)) / np.pi


def dtw_batch(dist: np.ndarray) -> np.ndarray:
    """DTW over ``(G, la, lb)`` frame distances, steps (1, 0), (0, 1), (1, 1): the cheapest path's total cost
    divided by its length (ties prefer the diagonal). Returns ``(G,)``."""
    g, la, lb = dist.shape
    cost = np.empty_like(dist, dtype=np.float64)
    length = np.empty(dist.shape, dtype=np.int64)
    for i in range(la):
        for j in range(lb):
            if i == 0 and j == 0:
                cost[:, 0, 0], length[:, 0, 0] = dist[:, 0, 0], 1
                continue
            options = []
            if i and j:
                options.append((cost[:, i - 1, j - 1], length[:, i - 1, j - 1]))
            if i:
                options.append((cost[:, i - 1, j], length[:, i - 1, j]))
            if j:
                options.append((cost[:, i, j - 1], length[:, i, j - 1]))
            best_cost, best_len = options[0]
            for c, n in options[1:]:
                better = c < best_cost
                best_cost, best_len = np.where(better, c, best_cost), np.where(better, n, best_len)
            cost[:, i, j] = best_cost + dist[:, i, j]
            length[:, i, j] = best_len + 1
    return cost[:, -1, -1] / length[:, -1, -1]


class _Distances:
    """DTW distances between items, computed once per unordered pair and in batches of equal lengths."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.cache: dict[tuple[int, int], float] = {}

    def compute(self, pairs) -> None:
        todo: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        for i, j in pairs:
            key = (i, j) if i < j else (j, i)
            if key not in self.cache:
                self.cache[key] = np.nan
                todo[(len(self.frames[key[0]]), len(self.frames[key[1]]))].append(key)
        for group in todo.values():
            for start in range(0, len(group), 4096):
                chunk = group[start : start + 4096]
                a = np.stack([self.frames[i] for i, _ in chunk])
                b = np.stack([self.frames[j] for _, j in chunk])
                for key, d in zip(chunk, dtw_batch(_frame_distances(a, b)), strict=True):
                    self.cache[key] = float(d)

    def __call__(self, i: int, j: int) -> float:
        return self.cache[(i, j) if i < j else (j, i)]


def _cells(items: list[Item], mode: str):
    """``(cell key, A indices, B indices, X indices)`` for every cell of the mode; X excludes A itself."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for n, it in enumerate(items):
        context = (it.prev, it.next) if mode != "any" else ()
        groups[(context, it.speaker, it.phone)].append(n)
    by_context: dict[tuple, dict[str, dict[str, list[int]]]] = defaultdict(lambda: defaultdict(dict))
    for (context, speaker, phone), members in groups.items():
        by_context[context][speaker][phone] = members
    for context, speakers in by_context.items():
        for s_ab, phones in speakers.items():
            x_speakers = [s_ab] if mode != "across" else [s for s in speakers if s != s_ab]
            for a, b in itertools.permutations(sorted(phones), 2):
                for s_x in x_speakers:
                    xs = speakers[s_x].get(a, [])
                    if mode != "across" and len(xs) < 2 or not xs:
                        continue  # within: X needs a second item of A's phone
                    yield (a, b, context, s_ab, s_x), phones[a], phones[b], xs


def abx_error(items: list[Item], frames: list[np.ndarray], mode: str) -> tuple[float, int]:
    """ABX error in percent over ``items`` with the given frames (``(n,)`` units or ``(n, D)`` features
    per item), and the number of triplets scored. NaN when no triplet exists."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    cells = list(_cells(items, mode))
    dist = _Distances(frames)
    dist.compute((x, y) for _, aa, bb, xs in cells for x in xs for y in itertools.chain(aa, bb) if x != y)
    scores: dict[tuple, float] = {}
    triplets = 0
    for key, aa, bb, xs in cells:
        d_a = np.array([[dist(x, a) if x != a else np.nan for a in aa] for x in xs])  # (X, A)
        d_b = np.array([[dist(x, b) for b in bb] for x in xs])  # (X, B)
        valid = ~np.isnan(d_a)  # X is never its own A
        closer = (d_a[:, :, None] < d_b[:, None, :]) + 0.5 * (d_a[:, :, None] == d_b[:, None, :])
        count = int(valid.sum()) * len(bb)
        if count:
            scores[key] = float(closer[valid].sum()) / count
            triplets += count
    if not scores:
        return float("nan"), 0
    # average over contexts, then speakers, then phone pairs
    per_speakers: dict[tuple, list[float]] = defaultdict(list)
    for (a, b, _context, s_ab, s_x), score in scores.items():
        per_speakers[(a, b, s_ab, s_x)].append(score)
    per_pair: dict[tuple, list[float]] = defaultdict(list)
    for (a, b, _s_ab, _s_x), values in per_speakers.items():
        per_pair[(a, b)].append(float(np.mean(values)))
    score = float(np.mean([np.mean(v) for v in per_pair.values()]))
    return 100.0 * (1.0 - score), triplets
