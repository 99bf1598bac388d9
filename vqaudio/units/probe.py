"""A downstream-ASR proxy for units: a small CTC phone recogniser trained on the units of some speakers and
tested on the others (phone error rate, silence excluded). Deterministic for a seed; a fixed budget of
updates (well under a minute on 2 CPU cores for 200 utterances)."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

log = logging.getLogger(__name__)
SIL = "SIL"


class _Recogniser(nn.Module):
    """Unit embedding -> two convolutions (kernel 5, 9 frames of context; dropout 0.2) -> phone logits (blank 0)."""

    def __init__(self, codebook_size: int, num_phones: int, dim: int = 64, hidden: int = 192) -> None:
        super().__init__()
        self.embed = nn.Embedding(codebook_size, dim)
        self.conv1 = nn.Conv1d(dim, hidden, 5, padding=2)
        self.conv2 = nn.Conv1d(hidden, hidden, 5, padding=2)
        self.out = nn.Conv1d(hidden, num_phones + 1, 1)

    def forward(self, units: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, P + 1, T) logits."""
        h = F.dropout(self.embed(units).transpose(1, 2), 0.2, self.training)
        h = F.dropout(F.relu(self.conv1(h)), 0.2, self.training)
        return self.out(F.relu(self.conv2(h)))


def edit_distance(ref: list[int], hyp: list[int]) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


def speaker_split(speakers: dict[str, str]) -> tuple[list[str], list[str]]:
    """Utterances of every fourth speaker (sorted by name, starting with the fourth) test; the rest train.
    With fewer than two speakers there is no held-out speaker: an error."""
    names = sorted(set(speakers.values()))
    if len(names) < 2:
        raise UserError(f"the probe needs at least 2 speakers to hold one out, got {len(names)}")
    test_speakers = set(names[3::4]) or {names[-1]}
    test = sorted(u for u, s in speakers.items() if s in test_speakers)
    train = sorted(u for u, s in speakers.items() if s not in test_speakers)
    return train, test


def _crops(
    units: list[int], segments: list[tuple[float, float, str]], frame_rate: float, seconds: float
) -> list[tuple[list[int], list[str]]]:
    """Pieces of about ``seconds`` that start and end on phone boundaries, with their phones: CTC then trains
    on short sequences whose transcripts are exact."""
    pieces, k = [], 0
    while k < len(segments):
        start, j = segments[k][0], k
        while j < len(segments) and segments[j][1] - start <= seconds:
            j += 1
        j = max(j, k + 1)
        first, last = int(round(start * frame_rate)), int(round(segments[j - 1][1] * frame_rate))
        if last > first and first < len(units):
            pieces.append((units[first : min(last, len(units))], [p for _, _, p in segments[k:j] if p != SIL]))
        k = j
    return pieces


def probe_per(
    train_units: dict[str, list[int]],
    test_units: dict[str, list[int]],
    ctm: dict[str, list[tuple[float, float, str]]],
    codebook_size: int,
    frame_rate: float = 50.0,
    steps: int = 1000,
    seed: int = 0,
) -> dict:
    """Train for ``steps`` updates of 16 pieces of about 2 s (cut on phone boundaries) from ``train_units``;
    return ``probe_per`` (percent) on the whole utterances of ``test_units`` and the sizes of both."""
    phones = sorted({p for u in train_units for _, _, p in ctm[u] if p != SIL})
    pid = {p: i + 1 for i, p in enumerate(phones)}  # 0 is the CTC blank
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = _Recogniser(codebook_size, len(phones))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    data = [
        (torch.tensor(piece), torch.tensor([pid[p] for p in target]))
        for u in sorted(train_units)
        for piece, target in _crops(train_units[u], ctm[u], frame_rate, 2.0)
        if target and len(piece) >= len(target)
    ]
    if not data:
        raise UserError("the probe has no training utterance with phones")
    model.train()
    for _ in range(steps):
        chunk = [data[i] for i in torch.randint(0, len(data), (16,), generator=gen).tolist()]
        x = nn.utils.rnn.pad_sequence([c[0] for c in chunk], batch_first=True)
        logp = model(x).log_softmax(1).permute(2, 0, 1)  # (T, B, P + 1)
        loss = F.ctc_loss(
            logp,
            torch.cat([c[1] for c in chunk]),
            torch.tensor([len(c[0]) for c in chunk]),
            torch.tensor([len(c[1]) for c in chunk]),
            zero_infinity=True,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    errors = total = 0
    with torch.no_grad():
        for u in sorted(test_units):
            ref = [pid.get(p, -1) for _, _, p in ctm[u] if p != SIL]  # a phone unseen in training is an error
            if not ref:
                continue
            best = model(torch.tensor(test_units[u])[None])[0].argmax(0).tolist()
            hyp = [p for i, p in enumerate(best) if p != 0 and (i == 0 or p != best[i - 1])]
            errors += edit_distance(ref, hyp)
            total += len(ref)
    per = 100.0 * errors / total if total else float("nan")
    log.info("probe: %d train / %d test utterances, PER %.1f %%", len(train_units), len(test_units), per)
    return {"probe_per": per, "probe_train_utterances": len(train_units), "probe_test_utterances": len(test_units)}
