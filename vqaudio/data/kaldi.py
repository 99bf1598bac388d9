"""Kaldi data directories: ``wav.scp`` (``utt path`` or ``utt cmd |``), optional ``segments``, ``utt2dur``,
``text``, ``utt2spk``, ``spk2utt``. Every reader validates as it goes and names the file and line at fault.

Wherever a command reads data (:func:`read_data_dir`, :func:`read_utt2dur`, :func:`read_text`,
:func:`read_utt2spk`, :func:`data_name`), a lhotse cut manifest (``*.jsonl.gz`` / ``*.jsonl``) may stand in for
the data dir: its cuts are the utterances, their supervisions give text and speakers
(:mod:`vqaudio.data.cuts`)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import UserError
from .cuts import is_cut_manifest, manifest_name, read_cut_rows


@dataclass(frozen=True)
class Utterance:
    """One utterance: its id, its audio source (path or ``cmd |``), and an optional segment in seconds."""

    utt_id: str
    source: str
    start: float = 0.0
    end: float | None = None


def id_problem(key: str) -> str | None:
    """Why ``key`` cannot be an utterance, recording or speaker id, or ``None`` when it can.

    Ids become file names (``resynth`` writes ``<utt>.wav``), so an id may not hold ``/`` or ``\\``, start
    with ``.``, or contain control characters.
    """
    if "/" in key or "\\" in key:
        return "ids may not contain '/' or '\\'"
    if key.startswith("."):
        return "ids may not start with '.'"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "ids may not contain control characters"
    return None


def check_id(key: str, path: str | pathlib.Path, line: int) -> str:
    """``key``, or a :class:`UserError` naming the file and line of an id that could form a path."""
    problem = id_problem(key)
    if problem:
        raise UserError(f"{path}:{line}: bad id {key!r}: {problem}; rename it in every table of the data dir")
    return key


def text_lines(path: str | pathlib.Path):
    """``(line number, line)`` of a UTF-8 text file, newline kept; a line that is not UTF-8 is a
    :class:`UserError` naming the file and line."""
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(
                    f"{path}:{n}: not UTF-8 text (byte {raw[err.start]:#x} at column {err.start + 1})"
                ) from None


def read_table(path: str | pathlib.Path, min_fields: int = 2) -> dict[str, str]:
    """Read ``key value...`` lines into ``{key: rest}``; duplicate keys, short lines and keys that could form a
    path (:func:`id_problem`) raise :class:`UserError` naming the file and line."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    table: dict[str, str] = {}
    for n, line in text_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            raise UserError(f"{path}:{n}: empty line (Kaldi tables have none; run fix_data_dir)")
        parts = line.split(maxsplit=1)
        if len(parts) < min(2, min_fields) or len(line.split()) < min_fields:
            raise UserError(f"{path}:{n}: expected at least {min_fields} fields, got {line!r}")
        key, rest = check_id(parts[0], path, n), parts[1] if len(parts) > 1 else ""
        if key in table:
            raise UserError(f"{path}:{n}: duplicate key {key!r}")
        table[key] = rest.strip()
    return table


def speakers_of(
    utts, utt2spk: str | pathlib.Path | Mapping[str, str] | None = None, strict: bool = False
) -> dict[str, str]:
    """The speaker of each utterance: from a Kaldi ``utt2spk`` file (or a ``{utt: speaker}`` mapping such as
    :func:`read_utt2spk` returns), else the id's prefix before its first ``-`` (LibriSpeech
    ``spk-chapter-utt``). With ``strict``, utterances missing from ``utt2spk`` are an error naming one;
    otherwise they fall back to the prefix."""
    if isinstance(utt2spk, Mapping):
        table = dict(utt2spk)
    else:
        table = read_table(utt2spk) if utt2spk is not None else {}
    missing = [u for u in utts if u not in table]
    if utt2spk is not None and strict and missing:
        where = "the speaker table" if isinstance(utt2spk, Mapping) else utt2spk
        raise UserError(f"{where}: no speaker for {len(missing)} utterance(s), e.g. {missing[0]!r}")
    return {u: table[u].split()[0] if u in table else u.split("-", 1)[0] for u in utts}


def read_data_dir(data_dir: str | pathlib.Path) -> list[Utterance]:
    """Utterances of a Kaldi data dir or a lhotse cut manifest, sorted by utterance id (C locale order).

    Raises ``ValueError`` naming the file and line for a missing ``wav.scp``, malformed lines,
    duplicate ids, segments pointing at unknown recordings or with ``end <= start``, or a manifest line that
    is not a cut.
    """
    if is_cut_manifest(data_dir):
        rows = read_cut_rows(data_dir)
        utts = [Utterance(check_id(r.cut_id, data_dir, r.line), r.source, r.start, r.end) for r in rows]
        return sorted(utts, key=lambda u: u.utt_id.encode())
    data_dir = pathlib.Path(data_dir)
    scp = data_dir / "wav.scp"
    if not scp.is_file():
        raise UserError(
            f"{data_dir}: no wav.scp (is this a Kaldi data dir? run the recipe's data stage first; a lhotse cut "
            "manifest is read when its name ends in .jsonl.gz or .jsonl)"
        )
    wavs = read_table(scp)
    segments = data_dir / "segments"
    if not segments.is_file():
        return [Utterance(u, wavs[u]) for u in sorted(wavs)]
    utts = []
    for utt, rest in read_table(segments, min_fields=4).items():
        fields = rest.split()
        n = len(utts) + 1
        if len(fields) != 3:
            raise UserError(f"{segments}:{n}: expected 'utt recording start end', got {utt} {rest!r}")
        rec, start, end = fields
        if rec not in wavs:
            raise UserError(f"{segments}:{n}: recording {rec!r} is not in {scp}")
        try:
            t0, t1 = float(start), float(end)
        except ValueError:
            raise UserError(f"{segments}:{n}: start/end must be numbers, got {start!r} {end!r}") from None
        if t1 != -1 and t1 <= t0:
            raise UserError(f"{segments}:{n}: end {t1} <= start {t0} for {utt}")
        utts.append(Utterance(utt, wavs[rec], t0, None if t1 == -1 else t1))
    return sorted(utts, key=lambda u: u.utt_id.encode())


def read_utt2dur(data_dir: str | pathlib.Path) -> dict[str, float]:
    """``utt2dur`` as floats (seconds), empty when the file is absent; a cut manifest's cut durations."""
    if is_cut_manifest(data_dir):
        return {r.cut_id: r.duration for r in read_cut_rows(data_dir)}
    path = pathlib.Path(data_dir) / "utt2dur"
    if not path.is_file():
        return {}
    out = {}
    for n, (utt, value) in enumerate(read_table(path).items(), 1):
        try:
            out[utt] = float(value)
        except ValueError:
            raise UserError(f"{path}:{n}: duration must be a number, got {value!r}") from None
    return out


def read_text(data_dir: str | pathlib.Path) -> dict[str, str] | None:
    """Transcripts by utterance: the data dir's ``text`` or the texts of a cut manifest's supervisions;
    ``None`` when there are none (no ``text`` file, no supervision with text)."""
    if is_cut_manifest(data_dir):
        return {r.cut_id: r.text for r in read_cut_rows(data_dir) if r.text is not None} or None
    path = pathlib.Path(data_dir) / "text"
    return read_table(path, min_fields=1) if path.is_file() else None


def read_utt2spk(data_dir: str | pathlib.Path) -> dict[str, str] | None:
    """Speakers by utterance: the data dir's ``utt2spk`` or the speakers of a cut manifest's supervisions;
    ``None`` when there are none (then :func:`speakers_of` takes the ids' prefixes)."""
    if is_cut_manifest(data_dir):
        return {r.cut_id: r.speaker for r in read_cut_rows(data_dir) if r.speaker is not None} or None
    path = pathlib.Path(data_dir) / "utt2spk"
    return {utt: spk.split()[0] for utt, spk in read_table(path).items()} if path.is_file() else None


def data_name(data_dir: str | pathlib.Path) -> str:
    """The name of a data set: the data dir's name, or a cut manifest's without ``.jsonl.gz`` / ``.jsonl``."""
    return manifest_name(data_dir) if is_cut_manifest(data_dir) else pathlib.Path(data_dir).name


def _lines(path: pathlib.Path) -> list[str]:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise UserError(f"{path}: last line has no trailing newline (run fix_data_dir)")
    return data.decode("utf-8").splitlines()


def _check_sorted_unique(path: pathlib.Path) -> list[str]:
    """Keys of a Kaldi table; raises naming file and line unless they are unique and C-locale sorted."""
    keys, prev = [], None
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            raise UserError(f"{path}:{n}: empty line")
        key = check_id(line.split()[0], path, n)
        if prev is not None and key.encode() <= prev.encode():
            what = "duplicate key" if key == prev else "not sorted in C locale order"
            raise UserError(f"{path}:{n}: {what}: {key!r} after {prev!r} (run fix_data_dir)")
        keys.append(key)
        prev = key
    return keys


def validate_data_dir(data_dir: str | pathlib.Path) -> int:
    """Check a Kaldi data dir as Kaldi's validate_data_dir.sh does; return the number of utterances.

    Rules: ``wav.scp`` and ``utt2spk`` exist; every table is unique-keyed, C-locale sorted, ends in a newline;
    ``spk2utt`` is the inverse of ``utt2spk``; ``text``, ``utt2dur``, ``segments`` and ``wav.scp`` (or the
    segments' recordings) cover exactly the utterances of ``utt2spk``. Errors name the file and line.
    """
    d = pathlib.Path(data_dir)
    for name in ("wav.scp", "utt2spk"):
        if not (d / name).is_file():
            raise UserError(f"{d}: missing {name} (run the recipe's data preparation stage)")
    utts = _check_sorted_unique(d / "utt2spk")
    utt2spk = read_table(d / "utt2spk")
    for n, (utt, spk) in enumerate(utt2spk.items(), 1):
        if len(spk.split()) != 1:
            raise UserError(f"{d / 'utt2spk'}:{n}: expected 'utt spk', got {utt} {spk!r}")
    if (d / "spk2utt").is_file():
        _check_sorted_unique(d / "spk2utt")
        inverse: dict[str, list[str]] = {}
        for utt, spk in utt2spk.items():
            inverse.setdefault(spk, []).append(utt)
        spk2utt = {k: v.split() for k, v in read_table(d / "spk2utt").items()}
        if spk2utt != {k: sorted(v, key=str.encode) for k, v in inverse.items()}:
            raise UserError(f"{d / 'spk2utt'} is not the inverse of {d / 'utt2spk'} (run fix_data_dir)")
    recs = _check_sorted_unique(d / "wav.scp")
    if (d / "segments").is_file():
        seg_utts = _check_sorted_unique(d / "segments")
        if seg_utts != utts:
            raise UserError(f"{d / 'segments'} and {d / 'utt2spk'} list different utterances")
        missing = {v.split()[0] for v in read_table(d / "segments", 4).values()} - set(recs)
        if missing:
            raise UserError(f"{d / 'segments'}: recordings missing from wav.scp, e.g. {sorted(missing)[0]!r}")
    elif recs != utts:
        extra = sorted(set(recs) ^ set(utts), key=str.encode)
        raise UserError(f"{d / 'wav.scp'} and {d / 'utt2spk'} list different utterances, e.g. {extra[0]!r}")
    for name in ("text", "utt2dur"):
        if (d / name).is_file() and _check_sorted_unique(d / name) != utts:
            extra = sorted(set(_check_sorted_unique(d / name)) ^ set(utts), key=str.encode)
            raise UserError(f"{d / name} and {d / 'utt2spk'} list different utterances, e.g. {extra[0]!r}")
    read_utt2dur(d)
    return len(utts)


TABLES = ("wav.scp", "segments", "text", "utt2spk", "utt2dur")


def fix_data_dir(data_dir: str | pathlib.Path) -> int:
    """Sort every table in C locale order, drop empty lines and utterances not present in every table,
    and rebuild ``spk2utt`` (as Kaldi's fix_data_dir.sh). Returns the number of utterances kept."""
    d = pathlib.Path(data_dir)
    tables = {n: {} for n in TABLES if (d / n).is_file()}
    for name in tables:
        for n, line in enumerate((d / name).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                key = check_id(line.split()[0], d / name, n)
                tables[name].setdefault(key, line.strip())
    keyed = [n for n in tables if n != "wav.scp" or "segments" not in tables]
    keep = set.intersection(*(set(tables[n]) for n in keyed))
    for name, rows in tables.items():
        keys = keep if name in keyed else set(rows)
        text = "".join(rows[k] + "\n" for k in sorted(keys, key=str.encode))
        (d / name).write_text(text, encoding="utf-8")
    if "utt2spk" in tables:
        spk2utt: dict[str, list[str]] = {}
        for utt in sorted(keep, key=str.encode):
            spk2utt.setdefault(tables["utt2spk"][utt].split()[1], []).append(utt)
        (d / "spk2utt").write_text(
            "".join(f"{s} {' '.join(u)}\n" for s, u in sorted(spk2utt.items(), key=lambda kv: kv[0].encode()))
        )
    return len(keep)


def split_data_dir(data_dir: str | pathlib.Path, nj: int) -> list[pathlib.Path]:
    """Split into ``DIR/split<nj>/<1..nj>/`` by speaker (no speaker spans two shards), like Kaldi's
    split_data.sh; the shards are valid data dirs whose utterances add up to the whole."""
    d = pathlib.Path(data_dir)
    validate_data_dir(d)
    spk2utt = {k: v.split() for k, v in read_table(d / "spk2utt").items()} if (d / "spk2utt").is_file() else {}
    if not spk2utt:
        for utt, spk in read_table(d / "utt2spk").items():
            spk2utt.setdefault(spk, []).append(utt)
    speakers = sorted(spk2utt, key=str.encode)
    if nj < 1 or nj > len(speakers):
        raise UserError(f"--nj must lie in [1, {len(speakers)}] (the number of speakers in {d}), got {nj}")
    total = sum(len(u) for u in spk2utt.values())
    shards, bounds, acc, j = [[] for _ in range(nj)], [total * (i + 1) / nj for i in range(nj)], 0, 0
    for i, spk in enumerate(speakers):
        left = len(speakers) - i
        if j < nj - 1 and (acc >= bounds[j] or left <= nj - 1 - j) and shards[j]:
            j += 1
        shards[j].append(spk)
        acc += len(spk2utt[spk])
    out = []
    for i, spks in enumerate(shards, 1):
        sub = d / f"split{nj}" / str(i)
        sub.mkdir(parents=True, exist_ok=True)
        utts = {u for s in spks for u in spk2utt[s]}
        for name in TABLES:
            if (d / name).is_file():
                rows = read_table(d / name, min_fields=1 if name == "text" else 2)
                keys = (
                    utts
                    if name != "wav.scp" or not (d / "segments").is_file()
                    else {read_table(d / "segments", 4)[u].split()[0] for u in utts}
                )
                (sub / name).write_text("".join(f"{k} {rows[k]}\n" for k in sorted(keys, key=str.encode)))
        (sub / "spk2utt").write_text("".join(f"{s} {' '.join(spk2utt[s])}\n" for s in spks))
        out.append(sub)
    return out


def write_utt2dur(data_dir: str | pathlib.Path) -> int:
    """Write ``utt2dur`` (seconds, 3 decimals) from ``segments`` or the audio headers of ``wav.scp``."""
    import soundfile as sf

    from .audio import AudioError, load_audio

    d = pathlib.Path(data_dir)
    lines = []
    for u in read_data_dir(d):
        if u.end is not None:
            dur = u.end - u.start
        elif u.source.rstrip().endswith("|"):
            dur = load_audio(u.source, 16000, name=u.utt_id).shape[0] / 16000
        else:
            try:
                dur = sf.info(u.source).duration - u.start
            except (sf.LibsndfileError, RuntimeError, OSError) as err:
                raise AudioError(f"{u.source}: unreadable audio for utterance {u.utt_id} ({err})") from err
        lines.append(f"{u.utt_id} {dur:.3f}\n")
    (d / "utt2dur").write_text("".join(lines))
    return len(lines)
