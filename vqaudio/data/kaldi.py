"""Kaldi data directories: ``wav.scp`` (``utt path`` or ``utt cmd |``), optional ``segments``, ``utt2dur``,
``text``, ``utt2spk``, ``spk2utt``. Every reader validates as it goes and names the file and line at fault."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Utterance:
    """One utterance: its id, its audio source (path or ``cmd |``), and an optional segment in seconds."""

    utt_id: str
    source: str
    start: float = 0.0
    end: float | None = None


def read_table(path: str | pathlib.Path, min_fields: int = 2) -> dict[str, str]:
    """Read ``key value...`` lines into ``{key: rest}``; duplicate keys and short lines raise ``ValueError``."""
    path = pathlib.Path(path)
    table: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                raise ValueError(f"{path}:{n}: empty line (Kaldi tables have none; run fix_data_dir)")
            parts = line.split(maxsplit=1)
            if len(parts) < 2 or len(line.split()) < min_fields:
                raise ValueError(f"{path}:{n}: expected at least {min_fields} fields, got {line!r}")
            key, rest = parts
            if key in table:
                raise ValueError(f"{path}:{n}: duplicate key {key!r}")
            table[key] = rest.strip()
    return table


def read_data_dir(data_dir: str | pathlib.Path) -> list[Utterance]:
    """Utterances of a Kaldi data dir, sorted by utterance id (C locale order).

    Raises ``ValueError`` naming the file and line for a missing ``wav.scp``, malformed lines,
    duplicate ids, segments pointing at unknown recordings or with ``end <= start``.
    """
    data_dir = pathlib.Path(data_dir)
    scp = data_dir / "wav.scp"
    if not scp.is_file():
        raise ValueError(f"{data_dir}: no wav.scp (is this a Kaldi data dir? run the recipe's data stage first)")
    wavs = read_table(scp)
    segments = data_dir / "segments"
    if not segments.is_file():
        return [Utterance(u, wavs[u]) for u in sorted(wavs)]
    utts = []
    for utt, rest in read_table(segments, min_fields=4).items():
        fields = rest.split()
        n = len(utts) + 1
        if len(fields) != 3:
            raise ValueError(f"{segments}:{n}: expected 'utt recording start end', got {utt} {rest!r}")
        rec, start, end = fields
        if rec not in wavs:
            raise ValueError(f"{segments}:{n}: recording {rec!r} is not in {scp}")
        try:
            t0, t1 = float(start), float(end)
        except ValueError:
            raise ValueError(f"{segments}:{n}: start/end must be numbers, got {start!r} {end!r}") from None
        if t1 != -1 and t1 <= t0:
            raise ValueError(f"{segments}:{n}: end {t1} <= start {t0} for {utt}")
        utts.append(Utterance(utt, wavs[rec], t0, None if t1 == -1 else t1))
    return sorted(utts, key=lambda u: u.utt_id.encode())


def read_utt2dur(data_dir: str | pathlib.Path) -> dict[str, float]:
    """``utt2dur`` as floats (seconds); empty when the file is absent."""
    path = pathlib.Path(data_dir) / "utt2dur"
    if not path.is_file():
        return {}
    out = {}
    for n, (utt, value) in enumerate(read_table(path).items(), 1):
        try:
            out[utt] = float(value)
        except ValueError:
            raise ValueError(f"{path}:{n}: duration must be a number, got {value!r}") from None
    return out
