"""Units in the files other toolkits load with their own readers: lhotse/icefall cuts and Hugging Face parquet.

* lhotse (``extract-units --format lhotse``): ``OUT/cuts.jsonl.gz``, a ``CutSet`` whose cuts carry the custom
  field ``units``, a ``TemporalArray`` of shape ``(T, Q)`` (frames x levels, int16, or int32 for codebooks over
  2**15; ``frame_shift`` = hop / sample rate, ``temporal_dim=0``, ``start`` = the cut's start), stored by
  lhotse's ``NumpyFilesWriter`` under ``OUT/lhotse_units/`` (the manifest holds that folder's absolute path).
  Read back with ``cut.load_custom("units")`` or ``collate_custom_field(cuts, "units", pad_value=-1)`` (0 is a
  unit). ``T`` is lhotse's frame count for the cut, ``round(duration / frame_shift)`` (half up): the codec's
  last frame, which covers a partial hop, is left out when less than half of that hop holds audio, so the
  units line up with lhotse features of the same frame shift. Input cuts keep every field they had;
  utterances of a Kaldi dir become cuts of their files (``Recording.from_file``; a ``cmd |`` source gives a
  cut without a recording) with one supervision holding ``text`` and the speaker of ``utt2spk``.
* Hugging Face (``--format hf``): ``OUT/data/<split>-<i>-of-<n>.parquet`` shards with the columns ``id``,
  ``speaker`` and ``text`` (null where the data gives none), ``units`` (``Q`` lists of integers, one per
  level), ``frame_rate`` and ``codec`` (the codec checksum of ``units.json``), and a dataset card
  ``OUT/README.md``; ``datasets.load_dataset("parquet", data_files=...)`` or ``load_dataset(OUT)`` reads them.

Every file is written whole or not at all (the arrays into a fresh folder that replaces the old one).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import math
import os
import pathlib
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from ..data.audio import is_file_source
from ..data.cuts import is_cut_manifest, read_cuts
from ..data.kaldi import Utterance, read_table, read_text, read_utt2spk
from ..errors import UserError
from ..fileio import atomic_files, atomic_output, atomic_write_text, finish_staged, make_dirs, path_inside
from ..scoring.packages import require
from .formats import unit_dtype

LHOTSE_MANIFEST = "cuts.jsonl.gz"
LHOTSE_ARRAYS = "lhotse_units"
HF_FOLDER = "data"
HF_ROWS_PER_SHARD = 20000
HF_GROUP_UNITS = 1 << 20  # units per row group, 2 MiB as int16: pyarrow peaks at 26 MiB writing them (63 at 1 << 22)


def require_format_packages(formats: Sequence[str]) -> None:
    """One :class:`UserError` line, before any work, when a package that a chosen format writes with is missing."""
    if "lhotse" in formats:
        require("lhotse", "extract-units --format lhotse", extra="lhotse")
    if "hf" in formats:
        require("pyarrow", "extract-units --format hf", extra="hf")


def lhotse_frames(duration: float, frame_shift: float, frames: int) -> int:
    """How many of a cut's ``frames`` units lhotse's ``load_custom`` returns for a cut of ``duration`` seconds:
    ``round(duration / frame_shift)`` (half up, as ``lhotse.array.seconds_to_frames``), at most ``frames``."""
    from lhotse.array import seconds_to_frames

    return seconds_to_frames(duration, frame_shift, max_index=frames)


def source_cuts(data: str | pathlib.Path, utts: Sequence[Utterance], num_samples: dict[str, int], sample_rate: int):
    """The lhotse cuts of ``utts``, one at a time in their order: a cut manifest's own cuts, or cuts made from a
    Kaldi data dir: a cut per utterance over its file's span (all channels; ``num_samples`` at ``sample_rate``
    gives the length of a ``cmd |`` utterance, whose cut has no recording), with a supervision holding its text
    and speaker where the data dir gives them."""
    require("lhotse", "extract-units --format lhotse", extra="lhotse")
    if is_cut_manifest(data):
        cuts = read_cuts(data)
        yield from (cuts[u.utt_id] for u in utts)
        return
    from lhotse import MonoCut, MultiCut, Recording, SupervisionSegment

    data = pathlib.Path(data)
    texts, speakers = read_text(data) or {}, read_utt2spk(data) or {}
    segments = data / "segments"
    rec_ids = {u: rest.split()[0] for u, rest in read_table(segments, 4).items()} if segments.is_file() else {}
    recordings: dict[str, Recording] = {}
    for u in utts:
        rec, start, channels = None, 0.0, [0]
        duration = num_samples[u.utt_id] / sample_rate
        if is_file_source(u.source):
            if u.source not in recordings:
                try:
                    recordings[u.source] = Recording.from_file(u.source, recording_id=rec_ids.get(u.utt_id, u.utt_id))
                except Exception as err:  # lhotse's audio backends raise their own kinds
                    raise UserError(f"{u.source}: lhotse cannot read this file's header ({err})") from None
            rec = recordings[u.source]
            end = rec.duration if u.end is None else min(u.end, rec.duration)
            start, duration, channels = u.start, end - u.start, list(rec.channel_ids)
        channel = channels if len(channels) > 1 else channels[0]
        supervision = SupervisionSegment(
            id=u.utt_id,
            recording_id=rec.id if rec is not None else u.utt_id,
            start=0.0,
            duration=duration,
            channel=channel,
            text=texts.get(u.utt_id),
            speaker=speakers.get(u.utt_id),
        )
        kind = MultiCut if len(channels) > 1 else MonoCut
        yield kind(u.utt_id, start, duration, channel, supervisions=[supervision], recording=rec)


class LhotseWriter:
    """lhotse cuts with the custom field ``units``, streamed cut by cut: each cut's ``(Q, T)`` units are stored
    time-major ``(T', Q)`` by lhotse's ``NumpyFilesWriter`` in a fresh folder (``T'`` = :func:`lhotse_frames`)
    and the cut is written to ``OUT/cuts.jsonl.gz``; when the block ends without error the folder replaces
    ``OUT/lhotse_units/`` and the manifest is renamed into place, on error neither is touched."""

    def __init__(self, out_dir: str | pathlib.Path, frame_shift: float, codebook_size: int):
        require("lhotse", "extract-units --format lhotse", extra="lhotse")
        self.out = pathlib.Path(out_dir)
        self.final = self.out / LHOTSE_ARRAYS
        self.stage = self.out / f".{LHOTSE_ARRAYS}.tmp{os.getpid()}"
        self.frame_shift, self.dtype = frame_shift, unit_dtype(codebook_size)
        self.manifest = self.out / LHOTSE_MANIFEST

    def __enter__(self) -> LhotseWriter:
        from lhotse.features.io import NumpyFilesWriter

        shutil.rmtree(self.stage, ignore_errors=True)
        make_dirs(self.stage)
        self._listed = str(self.final.resolve())  # where the manifest says the arrays are
        self._arrays = NumpyFilesWriter(self.stage)
        self._manifest = atomic_output(self.manifest)
        self._cuts = gzip.open(self._manifest.__enter__(), "wt", encoding="utf-8")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._cuts.close()
        except BaseException as err:
            finish_staged(self.stage, self.final, self._manifest, exc or err)
            raise
        finish_staged(self.stage, self.final, self._manifest, exc)  # the manifest last: it names the folder

    def add(self, cut, codes: Sequence[Sequence[int]]) -> None:
        """``codes``: ``(Q, T)`` units of ``cut``."""
        from lhotse.utils import fastcopy

        path_inside(self.stage, cut.id)  # the writer names a file after the id
        units = np.asarray(codes, dtype=self.dtype).T  # (T, Q)
        units = np.ascontiguousarray(units[: lhotse_frames(cut.duration, self.frame_shift, units.shape[0])])
        array = self._arrays.store_array(cut.id, units, frame_shift=self.frame_shift, temporal_dim=0, start=cut.start)
        array = fastcopy(array, array=fastcopy(array.array, storage_path=self._listed))
        self._cuts.write(json.dumps(cut.with_custom("units", array).to_dict(), ensure_ascii=False) + "\n")


def write_lhotse(
    out_dir: str | pathlib.Path,
    cuts: Iterable,
    codes: Mapping[str, Sequence[Sequence[int]]],
    frame_shift: float,
    codebook_size: int,
    progress: bool = True,
) -> pathlib.Path:
    """``OUT/cuts.jsonl.gz``: ``cuts`` with the custom field ``units`` (``codes[cut.id]``, ``(Q, T)``), see
    :class:`LhotseWriter`. Returns the manifest's path."""
    with LhotseWriter(out_dir, frame_shift, codebook_size) as writer:
        for cut in tqdm(cuts, desc="lhotse units", unit="cut", disable=not progress):
            writer.add(cut, codes[cut.id])
    return writer.manifest


def split_name(name: str) -> str:
    """A Hugging Face split name (word characters and dots) made from a data set's name."""
    return re.sub(r"[^\w.]+", "_", name).strip("._") or "train"


class HfWriter:
    """Parquet shards ``OUT/data/<split>-<i>-of-<n>.parquet`` streamed row by row, ``num_rows`` rows in all and
    at most ``rows_per_shard`` per shard, into temporary files that replace the shards together when the block
    ends without error (:func:`~vqaudio.fileio.atomic_files`; on error none does); then shards of an earlier,
    longer write are removed and the dataset card ``OUT/README.md`` (``card``) is written. A row is a dict with
    ``id``, ``speaker``, ``text``, ``units`` (``Q`` lists of ints), ``frame_rate`` and ``codec``. Rows wait as
    integer arrays (2 or 4 bytes a unit) and go out as a row group when ``group_rows`` rows or ``group_units``
    units wait, so memory is bounded whatever the corpus."""

    def __init__(
        self,
        out_dir: str | pathlib.Path,
        split: str,
        num_rows: int,
        codebook_size: int,
        card: str,
        rows_per_shard: int = HF_ROWS_PER_SHARD,
        group_rows: int = 1024,
        group_units: int | None = None,
    ):
        pa = require("pyarrow", "extract-units --format hf", extra="hf")
        self.dtype = unit_dtype(codebook_size)
        integer = pa.int16() if self.dtype is np.int16 else pa.int32()
        self.schema = pa.schema(
            [
                ("id", pa.string()),
                ("speaker", pa.string()),
                ("text", pa.string()),
                ("units", pa.list_(pa.list_(integer))),
                ("frame_rate", pa.float64()),
                ("codec", pa.string()),
            ]
        )
        self.out, self.split, self.card = pathlib.Path(out_dir), split, card
        self.folder = self.out / HF_FOLDER
        self.num_rows, self.rows_per_shard = num_rows, rows_per_shard
        self.group_rows, self.group_units = group_rows, group_units or HF_GROUP_UNITS
        self.count = max(1, math.ceil(num_rows / rows_per_shard))
        self.paths = [self.folder / f"{split}-{i:05d}-of-{self.count:05d}.parquet" for i in range(self.count)]
        self._written = 0  # shards begun
        self._rows: list[dict] = []
        self._added = self._in_shard = self._units = 0
        self._writer = None  # the ParquetWriter of the shard being written

    def __enter__(self) -> HfWriter:
        self._files = atomic_files(*self.paths)
        self._tmps = self._files.__enter__()
        return self

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(self._tmps[self._written], self.schema)
        self._written += 1

    def _write_group(self) -> None:
        import pyarrow as pa

        if self._writer is None:
            self._open()
        levels = [level for row in self._rows for level in row["units"]]
        inner = np.cumsum([0] + [len(level) for level in levels])
        outer = np.cumsum([0] + [len(row["units"]) for row in self._rows])
        values = np.concatenate(levels) if levels else np.zeros(0, self.dtype)
        units = pa.ListArray.from_arrays(
            pa.array(outer, pa.int32()), pa.ListArray.from_arrays(pa.array(inner, pa.int32()), pa.array(values))
        )
        columns = {
            name: pa.array([row[name] for row in self._rows], self.schema.field(name).type)
            for name in ("id", "speaker", "text", "frame_rate", "codec")
        }
        columns["units"] = units
        self._writer.write_table(pa.Table.from_pydict(columns, schema=self.schema))
        self._in_shard += len(self._rows)
        self._rows, self._units = [], 0

    def _close(self) -> None:
        writer, self._writer, self._in_shard = self._writer, None, 0
        writer.close()

    def add(self, row: dict) -> None:
        if self._added == self.num_rows:
            raise ValueError(f"{self.folder}: more rows than the {self.num_rows} the writer was made for")
        self._added += 1
        units = [np.asarray(level, dtype=self.dtype) for level in row["units"]]
        self._rows.append({**row, "units": units})
        self._units += sum(len(level) for level in units)
        waiting = len(self._rows)
        if (
            waiting == self.group_rows
            or self._units >= self.group_units
            or self._in_shard + waiting == self.rows_per_shard
        ):
            self._write_group()
            if self._in_shard == self.rows_per_shard:
                self._close()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                raise exc
            if self._added != self.num_rows:
                raise ValueError(f"{self.folder}: {self._added} rows, made for {self.num_rows}")
            if self._rows or not self._written:  # the last rows, or one empty shard when there are none
                self._write_group()
            if self._writer is not None:
                self._close()
        except BaseException as err:
            if self._writer is not None:
                with contextlib.suppress(Exception):
                    self._writer.close()
            self._files.__exit__(type(err), err, err.__traceback__)  # every temporary shard goes
            if err is exc:
                return
            raise
        self._files.__exit__(None, None, None)
        for stale in self.folder.glob(f"{self.split}-*-of-*.parquet"):
            if stale not in self.paths:
                stale.unlink()
        atomic_write_text(self.out / "README.md", self.card)


def write_hf(
    out_dir: str | pathlib.Path,
    split: str,
    rows: Sequence[dict],
    codebook_size: int,
    card: str,
    rows_per_shard: int = HF_ROWS_PER_SHARD,
) -> list[pathlib.Path]:
    """Parquet shards of ``rows`` and the dataset card, see :class:`HfWriter`. Returns the shards' paths."""
    with HfWriter(out_dir, split, len(rows), codebook_size, card, rows_per_shard) as writer:
        for row in rows:
            writer.add(row)
    return writer.paths


def dataset_card(
    split: str, source: str, num_rows: int, n_q: int, codebook_size: int, frame_rate: float, checksum: str, dedup: bool
) -> str:
    """The ``README.md`` beside the parquet shards: the ``datasets`` config (YAML) and what the columns hold."""
    dedup_note = (
        " Runs of repeated frames are collapsed (`--dedup`), so the units are no longer one per frame." if dedup else ""
    )
    return f"""---
configs:
- config_name: default
  data_files:
  - split: {split}
    path: {HF_FOLDER}/{split}-*.parquet
---

# {split}: discrete speech units

{num_rows} utterances of `{source}`, extracted by `vqaudio extract-units --format hf`: {n_q} level(s) of
units from codebooks of {codebook_size}, {frame_rate:g} frames per second.{dedup_note} The codec's checksum
(sha256 of its weights, as in `units.json`) is `{checksum}`.

| column | type | holds |
|---|---|---|
| `id` | string | utterance id |
| `speaker` | string or null | speaker (from `utt2spk` or the cuts' supervisions) |
| `text` | string or null | transcript (from `text` or the cuts' supervisions) |
| `units` | list of {n_q} lists of integers | `units[q][t]`: the unit of level `q` at frame `t` |
| `frame_rate` | float | frames per second |
| `codec` | string | checksum of the codec that made the units |

```python
from datasets import load_dataset

units = load_dataset("parquet", data_files="{HF_FOLDER}/*.parquet", split="train")
```
"""
