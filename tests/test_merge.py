"""The merge of extraction jobs: records streamed from each job's file in sorted order, so its memory does not
grow with the corpus; record heads read without parsing codes; the streaming writers commit all or nothing."""

from __future__ import annotations

import json
import pathlib
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from vqaudio.data.kaldi import Utterance
from vqaudio.errors import UserError
from vqaudio.units import read_fairseq, read_info, read_levels, read_units, toolkits, write_units
from vqaudio.units.extract import _append_lines, _complete_lines, _merge, _record_heads
from vqaudio.units.formats import KaldiUnitsWriter, level_path
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
    with pytest.raises(RuntimeError), KaldiUnitsWriter([level_path(tmp_path, 0), level_path(tmp_path, 1)]) as writer:
        writer.add("new", [[2], [3]])
        raise RuntimeError("killed")
    assert read_units(tmp_path / "units") == {"old": [1]}
    assert not (tmp_path / "units.level1").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units"]  # no temporary file left
    with pytest.raises(ValueError, match="2 levels"), KaldiUnitsWriter([level_path(tmp_path, 0)]) as writer:
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
    shards = sorted((tmp_path / "data").iterdir())
    assert [p.name for p in shards] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    written = [p.read_bytes() for p in shards]
    with pytest.raises(RuntimeError), HfWriter(tmp_path, "train", 5, 64, "card", rows_per_shard=2) as hf:
        for i in range(4):  # two shards full, then the job dies
            hf.add({**row, "id": f"v{i}"})
        raise RuntimeError("killed")
    assert sorted((tmp_path / "data").iterdir()) == shards and [p.read_bytes() for p in shards] == written


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


def test_a_merge_that_fails_part_way_replaces_no_output(tmp_path, monkeypatch):
    """A damaged record met late in the merge: every format keeps the previous merge's files, none is mixed, and
    no temporary file or folder is left."""
    pytest.importorskip("pyarrow")
    monkeypatch.setattr(toolkits, "HF_GROUP_UNITS", 50)  # parquet row groups written before the failure
    utts, data, work, codes = _work(tmp_path, 6, 20, n_q=2, nj=1)
    formats = ("kaldi", "npy", "fairseq", "hf")
    _merge(CODEC, "sum", utts, work.parent, work, 1, formats, False, 2, data, progress=False)
    before = {p.relative_to(work.parent): p.read_bytes() for p in work.parent.rglob("*") if p.is_file()}
    last = utts[-1].utt_id
    lines = (work / "job1of1.jsonl").read_text().splitlines(keepends=True)
    records = [json.loads(x) for x in lines]
    for r in records:  # other units this time, so a file written before the failure would show
        r["codes"] = [[(c + 1) % 1024 for c in level] for level in r["codes"]]
    damaged = [json.dumps(r, separators=(",", ":")) + "\n" for r in records]  # as jobs write them
    damaged = [x.replace("[[", "[[oops", 1) if f'"{last}"' in x else x for x in damaged]
    (work / "job1of1.jsonl").write_text("".join(damaged))
    with pytest.raises(UserError, match=f"record of {last} is damaged"):
        _merge(CODEC, "sum", utts, work.parent, work, 1, formats, False, 2, data, progress=False)
    after = {p.relative_to(work.parent): p.read_bytes() for p in work.parent.rglob("*") if p.is_file()}
    assert after.keys() - {pathlib.Path(".work/job1of1.jsonl")} == before.keys() - {pathlib.Path(".work/job1of1.jsonl")}
    assert all(after[k] == before[k] for k in before if k.parts[0] != ".work")
    assert [p.name for p in work.parent.iterdir() if p.name.startswith(".")] == [".work"]


def test_lhotse_output_of_no_utterance_replaces_the_old_one(tmp_path):
    pytest.importorskip("lhotse")
    utts, data, work, codes = _work(tmp_path, 2, 5, n_q=1, nj=1)
    for u in utts:  # lhotse reads each file's header
        pathlib.Path(u.source).parent.mkdir(exist_ok=True)
        sf.write(u.source, np.zeros(320 * len(codes[u.utt_id][0]), dtype=np.float32), 16000)
    _merge(CODEC, "sum", utts, work.parent, work, 1, ("lhotse",), False, 1, data, progress=False)
    assert len(list((work.parent / "lhotse_units").rglob("*.npy"))) == 2
    (work / "job1of1.jsonl").unlink()
    (work / "job1of1.failed").write_text("".join(json.dumps({"utt": u.utt_id, "reason": "gone"}) + "\n" for u in utts))
    _merge(CODEC, "sum", utts, work.parent, work, 1, ("lhotse",), False, 1, data, progress=False)
    assert list((work.parent / "lhotse_units").rglob("*")) == []
    assert read_info(work.parent).num_utterances == 0
    assert [p.name for p in work.parent.iterdir() if p.name.startswith(".")] == [".work"]


def test_hf_writer_leaves_no_shard_when_its_last_write_fails(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    row = {"id": "u", "speaker": None, "text": None, "units": [[1]], "frame_rate": 50.0, "codec": "c"}

    def full(self, table, row_group_size=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(OSError, match="No space"), HfWriter(tmp_path, "train", 1, 64, "card") as hf:
        hf.add(row)
    assert list((tmp_path / "data").iterdir()) == [] and not (tmp_path / "README.md").exists()


def test_atomic_files_replace_none_when_one_fails_to_commit(tmp_path, monkeypatch):
    from vqaudio import fileio

    a, b = tmp_path / "a.tsv", tmp_path / "b.km"
    a.write_text("old a\n")
    b.write_text("old b\n")
    chmod = fileio.os.chmod

    def refuse_b(path, mode):
        if pathlib.Path(path).name.startswith(".b.km"):
            raise OSError(28, "No space left on device")
        chmod(path, mode)

    monkeypatch.setattr(fileio.os, "chmod", refuse_b)
    with pytest.raises(OSError), fileio.atomic_text_files(a, b) as (fa, fb):
        fa.write("new a\n")
        fb.write("new b\n")
    assert (a.read_text(), b.read_text()) == ("old a\n", "old b\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "b.km"]


@pytest.mark.parametrize(
    "line, head",
    [
        ('{"utt":"u1","job":1,"num_samples":5,"codes":[[1]]}', ("u1", 5)),
        ('{"utt":"u1","num_samples":5,"frames":1,"codes":[[1]]}', ("u1", 5)),
        ('{"num_samples":5,"utt":"u1","codes":[[1]]}', ("u1", 5)),
        ('{"utt":"u1","num_samples":5.0,"codes":[[1]]}', None),
        ('{"utt":7,"num_samples":5,"codes":[[1]]}', None),
    ],
)
def test_record_heads_of_other_layouts_fall_back_or_are_refused(line, head):
    from vqaudio.units.extract import _head

    if head is None:
        with pytest.raises(UserError, match="not an extraction record"):
            _head(line.encode(), pathlib.Path("job1of1.jsonl"))
    else:
        assert _head(line.encode(), pathlib.Path("job1of1.jsonl")) == head
