"""``extract-units --format hf``: parquet shards and a dataset card that ``datasets.load_dataset`` reads back
equal to the extracted units."""

from __future__ import annotations

import sys

import pytest

from vqaudio.cli.main import main
from vqaudio.units import read_info, read_levels
from vqaudio.units.toolkits import write_hf

from .units_data import kaldi_dir, recordings, tiny_codec_file

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_parquet_shards_load_back_equal(tmp_path):
    files = recordings(tmp_path, 3)
    rows = [
        ("9001-1-0001", str(files[0]), "HELLO THERE", "9001"),
        ("9001-1-0002", str(files[1]), None, "9001"),  # no transcript: text is null
        ("9002-1-0001", str(files[2]), "GOOD DAY", None),  # no speaker in utt2spk: speaker is null
    ]
    data = kaldi_dir(tmp_path / "dev-clean-2", rows)
    model = tiny_codec_file(tmp_path / "model.pt", n_q=3)
    out = tmp_path / "units"
    for job in (1, 2):
        args = ["--data", str(data), "--out", str(out), "--format", "hf,kaldi", "--nj", "2", "--job", str(job)]
        assert main(["extract-units", "--model", str(model), *args]) == 0
    shards = sorted((out / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["dev_clean_2-00000-of-00001.parquet"]
    info, levels = read_info(out), read_levels(out)
    loaded = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    assert loaded.column_names == ["id", "speaker", "text", "units", "frame_rate", "codec"]
    assert loaded["id"] == [u for u, _, _, _ in rows]
    assert loaded["units"] == [levels[u] for u, _, _, _ in rows] and len(loaded["units"][0]) == 3
    assert loaded["text"] == ["HELLO THERE", None, "GOOD DAY"]
    assert loaded["speaker"] == ["9001", "9001", None]
    assert set(loaded["frame_rate"]) == {info.frame_rate} and set(loaded["codec"]) == {info.model_checksum}
    card = (out / "README.md").read_text()
    assert "path: data/dev_clean_2-*.parquet" in card and info.model_checksum in card
    by_card = datasets.load_dataset(str(out))  # the card's config names the split
    assert list(by_card) == ["dev_clean_2"] and by_card["dev_clean_2"]["units"] == loaded["units"]


def test_shards_split_rows_and_stale_shards_go(tmp_path):
    rows = [
        {"id": f"u{i}", "speaker": None, "text": None, "units": [[i, 1], [2, 3]], "frame_rate": 50.0, "codec": "c"}
        for i in range(5)
    ]
    write_hf(tmp_path, "train", rows, 1024, "card\n", rows_per_shard=2)
    assert len(list((tmp_path / "data").glob("train-*-of-00003.parquet"))) == 3
    write_hf(tmp_path, "train", rows[:3], 1024, "card\n", rows_per_shard=2)
    shards = sorted((tmp_path / "data").glob("*.parquet"))
    assert [p.name for p in shards] == ["train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]
    loaded = datasets.load_dataset("parquet", data_files=[str(p) for p in shards], split="train")
    assert loaded["units"] == [r["units"] for r in rows[:3]]


def test_a_missing_pyarrow_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    data = kaldi_dir(tmp_path / "data", [("u1", str(recordings(tmp_path, 1)[0]), None, None)])
    model = tiny_codec_file(tmp_path / "model.pt")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    args = ["--data", str(data), "--out", str(tmp_path / "o"), "--format", "kaldi,hf"]
    assert main(["extract-units", "--model", str(model), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs the pyarrow package" in err and "pip install 'vqaudio[hf]'" in err
    assert not (tmp_path / "o").exists()
