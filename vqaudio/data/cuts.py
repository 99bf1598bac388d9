"""lhotse cut manifests (``*.jsonl.gz`` or ``*.jsonl``, one cut per line) read as data, in place of a Kaldi
data dir.

Each ``MonoCut`` or ``MultiCut`` becomes an utterance: its id, its audio and, from its supervisions, a
transcript (their texts joined by spaces) and a speaker (the first supervision's that names one). A cut
that spans all channels of one audio file, with no lhotse transforms, reads that file from the cut's
offset like a Kaldi segment (channels averaged to mono); any other cut (one channel of several, a command
or URL source, speed perturbation) is read by lhotse itself (:data:`~vqaudio.data.audio.CUT_SOURCE`), its
own channels averaged to mono. ``MixedCut`` and ``PaddingCut`` lines are refused: store mixed or padded
audio as recordings first. Every problem is one line naming the file and line.
"""

from __future__ import annotations

import functools
import gzip
import json
import pathlib
import zlib
from dataclasses import dataclass

from ..errors import UserError
from .audio import CUT_SOURCE, one_line

MANIFEST_SUFFIXES = (".jsonl.gz", ".jsonl")
CUT_TYPES = ("MonoCut", "MultiCut", "Cut")  # "Cut": MonoCut's name before lhotse 0.8


@dataclass(frozen=True)
class CutRow:
    """One cut of a manifest as vqaudio reads it: ``line`` of the manifest, the cut's id, its audio as a
    :func:`~vqaudio.data.audio.load_audio` source with ``start``/``end`` seconds, its ``duration`` (seconds),
    and its supervisions' ``text`` and ``speaker`` (``None`` when they give none)."""

    line: int
    cut_id: str
    source: str
    start: float
    end: float | None
    duration: float
    text: str | None
    speaker: str | None


def is_cut_manifest(path: str | pathlib.Path) -> bool:
    """Whether ``path`` names a lhotse cut manifest (``*.jsonl.gz`` / ``*.jsonl``) rather than a Kaldi data dir."""
    return str(path).endswith(MANIFEST_SUFFIXES) and not pathlib.Path(path).is_dir()


def manifest_name(path: str | pathlib.Path) -> str:
    """The manifest's file name without ``.jsonl.gz`` / ``.jsonl`` (``cuts_dev.jsonl.gz`` -> ``cuts_dev``)."""
    name = pathlib.Path(path).name
    for suffix in MANIFEST_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _require_lhotse():
    from ..scoring.packages import require

    return require("lhotse", "reading a lhotse cut manifest", extra="lhotse")


def _lines(path: pathlib.Path):
    """``(line number, text)`` of a manifest, gzip'ed or not; unreadable files are one :class:`UserError` line."""
    gz = path.name.endswith(".gz")
    try:
        with gzip.open(path, "rt", encoding="utf-8") if gz else open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        what = "gzip'ed " if gz else ""
        raise UserError(f"{path}: not a readable {what}lhotse cut manifest ({one_line(str(err))})") from None


def _not_a_cut(data: dict) -> str:
    """Why a manifest line that is a JSON object is no cut vqaudio reads."""
    kind = data.get("type")
    if kind in ("MixedCut", "PaddingCut"):
        return f"a {kind}; vqaudio reads MonoCut and MultiCut manifests (store mixed or padded audio as recordings)"
    if "sources" in data:
        what = "a Recording"
    elif "recording_id" in data:
        what = "a SupervisionSegment"
    else:
        what = f"of type {kind!r}" if kind else "no lhotse cut"
    return f"{what}, not a cut; make cuts with lhotse's CutSet.from_manifests(recordings=..., supervisions=...)"


def _channels(cut) -> list[int]:
    return list(cut.channel) if isinstance(cut.channel, (list, tuple)) else [cut.channel]


def _source(cut) -> tuple[str, float, float | None]:
    """The cut's audio as a ``load_audio`` source: the file and the cut's span when the cut is a plain span of
    all channels of one file, else the cut itself in JSON (read by lhotse) from 0 to its end."""
    rec = cut.recording
    whole_file = (
        len(rec.sources) == 1
        and rec.sources[0].type == "file"
        and not rec.transforms
        and sorted(rec.sources[0].channels) == sorted(rec.channel_ids) == sorted(_channels(cut))
    )
    if whole_file:
        return rec.sources[0].source, float(cut.start), float(cut.end)
    data = cut.to_dict()
    for key in ("supervisions", "features", "custom"):
        data.pop(key, None)
    return CUT_SOURCE + json.dumps(data, separators=(",", ":"), sort_keys=True), 0.0, None


@functools.lru_cache(maxsize=4)
def _parse(path: str, mtime_ns: int, size: int) -> tuple[tuple[CutRow, ...], dict]:
    """The rows and the lhotse cuts (by id) of the manifest at ``path`` (cached while the file is unchanged)."""
    _require_lhotse()
    from lhotse.serialization import deserialize_item

    file = pathlib.Path(path)
    rows: list[CutRow] = []
    cuts: dict = {}
    for n, line in _lines(file):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{file}:{n}: not JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(data, dict):
            raise UserError(f"{file}:{n}: expected a JSON object (a lhotse cut), got {type(data).__name__}")
        if data.get("type") not in CUT_TYPES:
            raise UserError(f"{file}:{n}: {_not_a_cut(data)}")
        try:
            cut = deserialize_item(data)
        except Exception as err:  # lhotse's from_dict raises KeyError, TypeError, AssertionError, ...
            reason = f"{type(err).__name__}: {one_line(str(err))}"
            raise UserError(f"{file}:{n}: not a valid lhotse cut ({reason})") from None
        if cut.id in cuts:
            raise UserError(f"{file}:{n}: duplicate cut id {cut.id!r}")
        if not cut.has_recording:
            raise UserError(f"{file}:{n}: cut {cut.id!r} has no recording (no audio to read)")
        source, start, end = _source(cut)
        supervisions = sorted(cut.supervisions, key=lambda s: s.start)
        text = " ".join(s.text.strip() for s in supervisions if s.text and s.text.strip()) or None
        speaker = next((s.speaker for s in supervisions if s.speaker), None)
        rows.append(CutRow(n, cut.id, source, start, end, float(cut.duration), text, speaker))
        cuts[cut.id] = cut
    if not rows:
        raise UserError(f"{file}: no cuts in this lhotse manifest")
    return tuple(rows), cuts


def _parsed(path: str | pathlib.Path) -> tuple[tuple[CutRow, ...], dict]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (a lhotse cut manifest, *.jsonl.gz or *.jsonl)")
    stat = path.stat()
    return _parse(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def read_cut_rows(path: str | pathlib.Path) -> tuple[CutRow, ...]:
    """The cuts of the manifest ``path`` in file order (see :class:`CutRow`); the manifest is parsed once while
    it is unchanged, however many readers ask."""
    return _parsed(path)[0]


def read_cuts(path: str | pathlib.Path) -> dict:
    """The lhotse cut objects of the manifest ``path`` by cut id (parsed once, as :func:`read_cut_rows`)."""
    return _parsed(path)[1]
