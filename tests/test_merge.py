"""The merge of extraction jobs: records streamed from each job's file in sorted order, so its memory does not
grow with the corpus; record heads read without parsing codes; the streaming writers commit all or nothing."""

from __future__ import annotations

import json
import pathlib
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

from vqaudio.data.kaldi import Utterance
from vqaudio.errors import UserError
from vqaudio.units import read_fairseq, read_info, read_levels, read_units, toolkits, write_units
from vqaudio.units.extract import _append_lines, _complete_lines, _merge, _record_heads
from vqaudio.units.formats import KaldiUnitsWriter
from vqaudio.units.toolkits import HfWriter

# what _merge reads of a unit model
CODEC = SimpleNamespace(codebook_size=1024, sample_rate=16000, frame_rate=50.0, hop_length=320)


def _work(tmp_path: pathlib.Path, count: int, frames: int, n_q: int = 4, nj: int = 2):
    """A finished extraction's work dir of ``count`` utterances split into ``nj`` jobs, each job's records in
    shuffled order (as jobs write them: by length); returns (utterances, data dir, work dir, codes per utt)."""
    rng = np.random.default_rng(count)
    data, work = tmp_path / "data", tmp_path / "out" / ".work"
    data.mkdir(parents=True)
    work.mkdir(parents=True)
    utts = [Utterance(f"spk-{i:05d}", str(tmp_path / "audio" / f"spk-{i:05d}.flac")) for i in range(count)]
    (data / "wav.scp").write_text("".join(f"{u.utt_id} {u.source}\n" for u in utts))
    codes = {u.utt_id: rng.integers(0, 1024, (n_q, frames + i % 7)).tolist() for i, u in enumerate(utts)}
    bounds = np.linspace(0, count, nj + 1).round().astype(int)
    for j in range(nj):
        mine = [u.utt_id for u in utts[bounds[j] : bounds[j + 1]]]
        rng.shuffle(mine)
        records = [{"utt": u, "num_samples": 320 * len(codes[u][0]), "codes": codes[u]} for u in mine]
        _append_lines(work / f"job{j + 1}of{nj}.jsonl", records)
        (work / f"job{j + 1}of{nj}.done").write_text(f"{len(mine)}\n")
    return utts, data, work, codes


def _merge_peak(tmp_path, count, frames, formats=("kaldi", "npy", "fairseq", "hf")):
    utts, data, work, codes = _work(tmp_path, count, frames)
    tracemalloc.start()
    try:
        _merge(CODEC, "sum", utts, work.parent, work, 2, formats, False, 4, data, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, work.parent, codes


def test_merge_memory_is_flat_in_the_corpus_and_its_outputs_are_sorted_and_whole(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")  # imported before, so the first peak holds no module
    monkeypatch.setattr(toolkits, "HF_GROUP_UNITS", 20000)  # row groups as small as the test's corpus is
    small, _, _ = _merge_peak(tmp_path / "small", 12, 1500)
    peak, out, codes = _merge_peak(tmp_path / "large", 96, 1500)
    as_lists = sum(28 * 4 * len(c[0]) for c in codes.values())  # one int object per unit (>= 256 not cached)
    assert peak < small + (1 << 18), (small, peak)  # 8x the utterances, not 8x the memory
    assert peak < as_lists / 10, (peak, as_lists)
    assert read_levels(out) == codes
    assert list(read_units(out / "units")) == sorted(codes)
    root, rows = read_fairseq(out, "data")
    assert [r[2] for r in rows] == [codes[u][0] for u in sorted(codes)]
    assert [r[1] for r in rows] == [320 * len(codes[u][0]) for u in sorted(codes)]
    for utt in ("spk-00000", "spk-00095"):
        assert np.load(out / "npy" / f"{utt}.npy").T.tolist() == codes[utt]
    table = pq.read_table(next((out / "data").glob("data-*.parquet")))
    assert table.column("id").to_pylist() == sorted(codes)
    assert table.column("units").to_pylist()[5] == codes[sorted(codes)[5]]
    assert read_info(out).num_utterances == 96


def test_merge_with_dedup_collapses_runs_of_the_frame_tuple(tmp_path):
    utts, data, work, _ = _work(tmp_path, 3, 4, n_q=2, nj=1)
    record = {"utt": utts[1].utt_id, "num_samples": 1600, "codes": [[1, 1, 2, 2, 2], [3, 3, 3, 4, 4]]}
    lines = (work / "job1of1.jsonl").read_text().splitlines(keepends=True)
    (work / "job1of1.jsonl").write_text(
        "".join(x for x in lines if utts[1].utt_id not in x) + json.dumps(record) + "\n"
    )
    _merge(CODEC, "sum", utts, work.parent, work, 1, ("kaldi",), True, 2, data, progress=False)
    assert read_levels(work.parent)[utts[1].utt_id] == [[1, 2, 2], [3, 3, 4]]  # (1,3) (2,3) (2,4)


def test_record_heads_give_ids_with_quotes_other_key_orders_and_offsets(tmp_path):
    path = tmp_path / "job1of1.jsonl"
    odd = 'a"b,"num_samples":9,"codes":x é'
    _append_lines(
        path, [{"utt": odd, "num_samples": 7, "codes": [[1, 2]]}, {"utt": "b", "num_samples": 3, "codes": []}]
    )
    with open(path, "a") as f:
        f.write(json.dumps({"codes": [[5]], "num_samples": 11, "utt": "c"}) + "\n")
    heads = list(_record_heads(path))
    assert [(u, n) for u, n, _ in heads] == [(odd, 7), ("b", 3), ("c", 11)]
    with open(path, "rb") as f:
        for utt, _, offset in heads:
            f.seek(offset)
            assert json.loads(f.readline())["utt"] == utt
    with open(path, "a") as f:
        f.write("not json\n")
    with pytest.raises(UserError, match="not an extraction record"):
        list(_record_heads(path))


def test_a_partial_last_line_longer_than_the_search_block_is_cut(tmp_path):
    path = tmp_path / "job1of1.jsonl"
    _append_lines(path, [{"utt": "a", "num_samples": 1, "codes": [[1]]}])
    whole = path.stat().st_size
    with open(path, "a") as f:
        f.write('{"utt":"b","num_samples":2,"codes":[[' + "1," * 200_000)  # a killed write, 400 kB, no newline
    assert _complete_lines(path) == whole == path.stat().st_size
    assert [u for u, _, _ in _record_heads(path)] == ["a"]
    path.write_text('{"utt":"a"')  # no complete line at all
    assert _complete_lines(path) == 0 and path.read_bytes() == b""


def test_streamed_writers_leave_the_old_files_on_error(tmp_path):
    write_units(tmp_path / "units", {"old": [1]})
    with pytest.raises(RuntimeError), KaldiUnitsWriter(tmp_path, 2) as writer:
        writer.add("new", [[2], [3]])
        raise RuntimeError("killed")
    assert read_units(tmp_path / "units") == {"old": [1]}
    assert not (tmp_path / "units.level1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units"]  # no temporary file left
    with pytest.raises(ValueError, match="2 levels"), KaldiUnitsWriter(tmp_path, 1) as writer:
        writer.add("new", [[2], [3]])


def test_hf_writer_refuses_a_row_count_other_than_announced(tmp_path):
    pytest.importorskip("pyarrow")
    row = {"id": "u", "speaker": None, "text": None, "units": [[1]], "frame_rate": 50.0, "codec": "c"}
    with (
        pytest.raises(ValueError, match="1 rows, made for 3"),
        HfWriter(tmp_path, "train", 3, 64, "card", group_rows=1) as hf,
    ):
        hf.add(row)
    with pytest.raises(ValueError, match="more rows"), HfWriter(tmp_path, "train", 1, 64, "card", group_rows=1) as hf:
        hf.add(row)
        hf.add(row)
    assert not (tmp_path / "README.md").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == []  # no shard, no temporary file
    with HfWriter(tmp_path, "train", 5, 64, "card", rows_per_shard=2, group_rows=1) as hf:
        for i in range(5):
            hf.add({**row, "id": f"u{i}"})
    assert [p.name for p in sorted((tmp_path / "data").iterdir())] == [
        f"train-0000{i}-of-00003.parquet" for i in range(3)
    ]


def test_merge_takes_failures_and_a_job_that_extracted_nothing(tmp_path):
    utts, data, work, codes = _work(tmp_path, 4, 3, n_q=1, nj=1)
    lines = (work / "job1of1.jsonl").read_text().splitlines(keepends=True)
    for f in work.iterdir():
        f.unlink()
    (work / "job1of2.jsonl").write_text("".join(x for x in lines if '"spk-00002"' not in x and '"spk-00003"' not in x))
    failed = [{"utt": "spk-00002", "reason": "unreadable"}, {"utt": "spk-00003", "reason": "empty audio"}]
    (work / "job2of2.failed").write_text("\n".join(json.dumps(r) for r in failed) + "\n\n")  # no .jsonl at all
    _merge(CODEC, "sum", utts, work.parent, work, 2, ("kaldi",), False, 1, data, progress=False)
    assert read_units(work.parent / "units") == {u: codes[u][0] for u in ("spk-00000", "spk-00001")}
    assert (work.parent / "failed.txt").read_text() == "spk-00002\tunreadable\nspk-00003\tempty audio\n"
    assert read_info(work.parent).num_failed == 2
    (work / "job2of2.failed").write_text(json.dumps(failed[0]) + "\n")
    with pytest.raises(UserError, match="1 utterance.*spk-00003"):
        _merge(CODEC, "sum", utts, work.parent, work, 2, ("kaldi",), False, 1, data, progress=False)
