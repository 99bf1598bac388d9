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

import gzip
import json
import math
import os
import pathlib
import re
import shutil
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from ..data.audio import is_file_source
from ..data.cuts import is_cut_manifest, read_cuts
from ..data.kaldi import Utterance, read_table, read_text, read_utt2spk
from ..errors import UserError
from ..fileio import atomic_output, atomic_write_text, path_inside
from ..scoring.packages import require

LHOTSE_MANIFEST = "cuts.jsonl.gz"
LHOTSE_ARRAYS = "lhotse_units"
HF_FOLDER = "data"
HF_ROWS_PER_SHARD = 20000


def require_format_packages(formats: Sequence[str]) -> None:
    """One :class:`UserError` line, before any work, when a package that a chosen format writes with is missing."""
    if "lhotse" in formats:
        require("lhotse", "extract-units --format lhotse", extra="lhotse")
    if "hf" in formats:
        require("pyarrow", "extract-units --format hf", extra="hf")


def _int_type(codebook_size: int):
    return np.int16 if codebook_size <= 2**15 else np.int32


def lhotse_frames(duration: float, frame_shift: float, frames: int) -> int:
    """How many of a cut's ``frames`` units lhotse's ``load_custom`` returns for a cut of ``duration`` seconds:
    ``round(duration / frame_shift)`` (half up, as ``lhotse.array.seconds_to_frames``), at most ``frames``."""
    from lhotse.array import seconds_to_frames

    return seconds_to_frames(duration, frame_shift, max_index=frames)


def source_cuts(data: str | pathlib.Path, utts: Sequence[Utterance], num_samples: dict[str, int], sample_rate: int):
    """The lhotse cuts of ``utts`` (in their order): a cut manifest's own cuts, or cuts made from a Kaldi data
    dir: a cut per utterance over its file's span (all channels; ``num_samples`` at ``sample_rate`` gives the
    length of a ``cmd |`` utterance, whose cut has no recording), with a supervision holding its text and
    speaker where the data dir gives them."""
    require("lhotse", "extract-units --format lhotse", extra="lhotse")
    if is_cut_manifest(data):
        cuts = read_cuts(data)
        return [cuts[u.utt_id] for u in utts]
    from lhotse import MonoCut, MultiCut, Recording, SupervisionSegment

    data = pathlib.Path(data)
    texts, speakers = read_text(data) or {}, read_utt2spk(data) or {}
    segments = data / "segments"
    rec_ids = {u: rest.split()[0] for u, rest in read_table(segments, 4).items()} if segments.is_file() else {}
    recordings: dict[str, Recording] = {}
    cuts = []
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
        cuts.append(kind(u.utt_id, start, duration, channel, supervisions=[supervision], recording=rec))
    return cuts


def write_lhotse(
    out_dir: str | pathlib.Path,
    cuts: Sequence,
    codes: dict[str, Sequence[Sequence[int]]],
    frame_shift: float,
    codebook_size: int,
    progress: bool = True,
) -> pathlib.Path:
    """``OUT/cuts.jsonl.gz``: ``cuts`` with the custom field ``units``, each ``codes[cut.id]`` (``(Q, T)``) stored
    time-major ``(T', Q)`` by lhotse's ``NumpyFilesWriter`` under ``OUT/lhotse_units/``, ``T'`` =
    :func:`lhotse_frames`. Returns the manifest's path."""
    require("lhotse", "extract-units --format lhotse", extra="lhotse")
    from lhotse.features.io import NumpyFilesWriter
    from lhotse.utils import fastcopy

    out = pathlib.Path(out_dir)
    final = out / LHOTSE_ARRAYS
    stage, old = out / f".{LHOTSE_ARRAYS}.tmp{os.getpid()}", out / f".{LHOTSE_ARRAYS}.old{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    dtype, written = _int_type(codebook_size), []
    with NumpyFilesWriter(stage) as writer:
        for cut in tqdm(cuts, desc="lhotse units", unit="cut", disable=not progress):
            path_inside(stage, cut.id)  # the writer names a file after the id
            units = np.asarray(codes[cut.id], dtype=dtype).T  # (T, Q)
            units = np.ascontiguousarray(units[: lhotse_frames(cut.duration, frame_shift, units.shape[0])])
            array = writer.store_array(cut.id, units, frame_shift=frame_shift, temporal_dim=0, start=cut.start)
            array = fastcopy(array, array=fastcopy(array.array, storage_path=str(final.resolve())))
            written.append(cut.with_custom("units", array))
    if final.exists():
        final.rename(old)
    stage.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    manifest = out / LHOTSE_MANIFEST
    with atomic_output(manifest) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(cut.to_dict(), ensure_ascii=False) + "\n" for cut in written)
    return manifest


def split_name(name: str) -> str:
    """A Hugging Face split name (word characters and dots) made from a data set's name."""
    return re.sub(r"[^\w.]+", "_", name).strip("._") or "train"


def write_hf(
    out_dir: str | pathlib.Path,
    split: str,
    rows: Sequence[dict],
    codebook_size: int,
    card: str,
    rows_per_shard: int = HF_ROWS_PER_SHARD,
) -> list[pathlib.Path]:
    """Parquet shards ``OUT/data/<split>-<i>-of-<n>.parquet`` of ``rows`` (dicts with ``id``, ``speaker``,
    ``text``, ``units`` (``Q`` lists of ints), ``frame_rate``, ``codec``), at most ``rows_per_shard`` rows each,
    and the dataset card ``OUT/README.md`` (``card``); shards of an earlier, longer write are removed.
    Returns the shards' paths."""
    pa = require("pyarrow", "extract-units --format hf", extra="hf")
    import pyarrow.parquet as pq

    integer = pa.int16() if _int_type(codebook_size) is np.int16 else pa.int32()
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("speaker", pa.string()),
            ("text", pa.string()),
            ("units", pa.list_(pa.list_(integer))),
            ("frame_rate", pa.float64()),
            ("codec", pa.string()),
        ]
    )
    folder = pathlib.Path(out_dir) / HF_FOLDER
    count = max(1, math.ceil(len(rows) / rows_per_shard))
    paths = []
    for i in range(count):
        table = pa.Table.from_pylist(list(rows[i * rows_per_shard : (i + 1) * rows_per_shard]), schema=schema)
        path = folder / f"{split}-{i:05d}-of-{count:05d}.parquet"
        with atomic_output(path) as tmp:
            pq.write_table(table, tmp)
        paths.append(path)
    for stale in folder.glob(f"{split}-*-of-*.parquet"):
        if stale not in paths:
            stale.unlink()
    atomic_write_text(pathlib.Path(out_dir) / "README.md", card)
    return paths


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
