"""lhotse in and out: a cut manifest wherever a data dir is read, and ``extract-units --format lhotse`` read back
with lhotse's own API."""

from __future__ import annotations

import gzip
import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.data.audio import CUT_SOURCE
from vqaudio.data.kaldi import read_data_dir, read_text, read_utt2dur, read_utt2spk
from vqaudio.errors import UserError
from vqaudio.models import Codec
from vqaudio.units import read_info, read_levels

from .speech import SR
from .units_data import kaldi_dir, recordings, stereo_file, tiny_codec_file

lhotse = pytest.importorskip("lhotse")
from lhotse import CutSet, MonoCut, MultiCut, Recording, SupervisionSegment  # noqa: E402
from lhotse.dataset.collation import collate_custom_field  # noqa: E402


def _extract(model, data, out, *extra) -> None:
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(out), *extra]) == 0


@pytest.fixture
def corpus(tmp_path):
    """The same utterances twice: a lhotse manifest of cuts (an offset into a long recording, a whole file, both
    channels of a stereo file, one channel of it) and a Kaldi dir of files holding exactly their samples."""
    mono = recordings(tmp_path, 2)
    stereo = tmp_path / "stereo.wav"
    both = stereo_file(stereo, mono[0], mono[1])
    rec0, rec1, rec2 = (Recording.from_file(p) for p in (*mono, stereo))

    def sup(cut_id, rec, start, duration, text, speaker, channel=0):
        return SupervisionSegment(f"{cut_id}-{start}", rec.id, start, duration, channel, text=text, speaker=speaker)

    cuts = CutSet.from_cuts(
        [
            MonoCut("a-offset", 0.3, 1.2, 0, recording=rec0, supervisions=[sup("a", rec0, 0.0, 1.2, "HELLO", "s1")]),
            MonoCut("b-whole", 0.0, rec1.duration, 0, recording=rec1),
            MultiCut(
                "c-mix",
                0.5,
                1.5,
                [0, 1],
                recording=rec2,
                supervisions=[sup("c", rec2, 0.8, 0.7, "WORLD", "s3", [0, 1]), sup("c", rec2, 0.0, 0.6, "A", "s2")],
            ),
            MonoCut("d-right", 0.25, 1.0, 1, recording=rec2, supervisions=[sup("d", rec2, 0, 1.0, None, "s4", 1)]),
        ]
    )
    manifest = tmp_path / "cuts_dev.jsonl.gz"
    cuts.to_file(manifest)

    def span(samples, start, duration):
        return samples[round(start * SR) : round((start + duration) * SR)]

    first = sf.read(mono[0], dtype="float32")[0]
    same = {
        "a-offset": span(first, 0.3, 1.2),
        "b-whole": sf.read(mono[1], dtype="float32")[0],
        "c-mix": span(both.mean(axis=1), 0.5, 1.5),  # both channels averaged, as for a multi-channel file
        "d-right": span(both[:, 1], 0.25, 1.0),
    }
    (tmp_path / "samples").mkdir()
    rows = []
    for utt, wav in same.items():
        sf.write(tmp_path / "samples" / f"{utt}.wav", wav, SR, subtype="FLOAT")
        rows.append((utt, str(tmp_path / "samples" / f"{utt}.wav"), None, None))
    return manifest, kaldi_dir(tmp_path / "kaldi", rows), same


def test_a_cut_gives_the_units_of_the_same_samples_in_a_kaldi_dir(tmp_path, corpus):
    manifest, kaldi, same = corpus
    utts = {u.utt_id: u for u in read_data_dir(manifest)}
    assert list(utts) == ["a-offset", "b-whole", "c-mix", "d-right"]
    assert utts["a-offset"].source.endswith(".flac")
    assert (utts["a-offset"].start, utts["a-offset"].end) == pytest.approx((0.3, 1.5))
    assert utts["d-right"].source.startswith(CUT_SOURCE)  # one channel of two: lhotse reads it
    assert read_text(manifest) == {"a-offset": "HELLO", "c-mix": "A WORLD"}  # by start time
    assert read_utt2spk(manifest) == {"a-offset": "s1", "c-mix": "s2", "d-right": "s4"}
    assert read_utt2dur(manifest)["c-mix"] == 1.5
    model = tiny_codec_file(tmp_path / "model.pt")
    _extract(model, manifest, tmp_path / "from_cuts")
    _extract(model, kaldi, tmp_path / "from_kaldi")
    from_cuts, from_kaldi = read_levels(tmp_path / "from_cuts"), read_levels(tmp_path / "from_kaldi")
    assert from_cuts == from_kaldi
    codec = Codec.from_pretrained(model)
    for utt, wav in same.items():
        assert from_cuts[utt] == codec.encode(torch.from_numpy(wav)[None, None])[0].tolist()


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("cuts.jsonl.gz", b"not gzip at all", r"cuts.jsonl.gz: not a readable gzip'ed lhotse cut manifest"),
        ("cuts.jsonl.gz", "truncated", r"cuts.jsonl.gz: not a readable gzip'ed lhotse cut manifest"),
        ("cuts.jsonl", '{"type": "MonoCut"\n', r"cuts.jsonl:1: not JSON"),
        ("cuts.jsonl", "[1, 2]\n", r"cuts.jsonl:1: expected a JSON object"),
        ("cuts.jsonl", '{"id": "r", "sources": [], "sampling_rate": 16000}\n', r":1: a Recording, not a cut"),
        ("cuts.jsonl", '{"id": "m", "type": "MixedCut", "tracks": []}\n', r":1: a MixedCut; vqaudio reads MonoCut"),
        ("cuts.jsonl", '{"id": "x", "type": "MonoCut"}\n', r"cuts.jsonl:1: not a valid lhotse cut \("),
        ("cuts.jsonl", "\n", r"cuts.jsonl: no cuts in this lhotse manifest"),
        ("cuts.jsonl", "duplicate", r"cuts.jsonl:2: duplicate cut id 'a-offset'"),
        ("cuts.jsonl", "bad id", r"cuts.jsonl:1: bad id '../a': ids may not contain '/'"),
    ],
)
def test_a_bad_manifest_is_one_line_naming_the_file(tmp_path, corpus, capsys, name, content, message):
    good = gzip.decompress(corpus[0].read_bytes()).decode().splitlines(keepends=True)
    path = tmp_path / name
    if content == "truncated":
        path.write_bytes(corpus[0].read_bytes()[:-20])
    elif content == "duplicate":
        path.write_text(good[0] + good[0])
    elif content == "bad id":
        path.write_text(good[0].replace('"a-offset"', '"../a"', 1))
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        read_data_dir(path)
    model = tiny_codec_file(tmp_path / "model.pt")
    assert main(["extract-units", "--model", str(model), "--data", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err


def test_lhotse_output_reads_back_with_lhotse_exactly(tmp_path, corpus):
    manifest, kaldi, _ = corpus
    model = tiny_codec_file(tmp_path / "model.pt")
    codec = Codec.from_pretrained(model)
    frame_shift = codec.hop_length / codec.sample_rate
    for data in (manifest, kaldi):
        out = tmp_path / f"units_{data.name}"
        for job in (2, 1):  # two shards, merged by the job that finishes last
            _extract(model, data, out, "--format", "kaldi,lhotse", "--nj", "2", "--job", str(job))
        assert (out / "cuts.jsonl.gz").exists() and read_info(out).num_utterances == 4
        levels = read_levels(out)
        cuts = lhotse.load_manifest(out / "cuts.jsonl.gz")
        assert sorted(cuts.ids) == sorted(levels)
        for cut in cuts:
            units = cut.load_custom("units")
            assert cut.units.frame_shift == frame_shift and cut.units.temporal_dim == 0
            assert units.dtype == np.int16 and units.shape[1] == 2
            # lhotse's frame count for the cut: the codec's last, partial frame only when half of it holds audio
            expected = np.array(levels[cut.id]).T
            assert units.shape[0] == int(cut.duration / frame_shift + 0.5 + 1e-9)  # rounded half up
            assert 0 <= expected.shape[0] - units.shape[0] <= 1
            assert np.array_equal(units, expected[: units.shape[0]])
        batch, lengths = collate_custom_field(cuts, "units", pad_value=-1)
        assert batch.shape == (4, int(lengths.max()), 2)
        for row, cut, n in zip(batch, cuts, lengths, strict=True):
            assert torch.equal(row[:n], torch.from_numpy(cut.load_custom("units")).long())
            assert bool((row[n:] == -1).all())
        if data == manifest:  # input cuts keep what they had: channels, supervisions
            c_mix = cuts["c-mix"]
            assert c_mix.channel == [0, 1] and [s.text for s in c_mix.supervisions] == ["WORLD", "A"]
        else:  # Kaldi utterances become cuts of their files, loadable by lhotse
            assert np.array_equal(cuts["b-whole"].load_audio()[0], corpus[2]["b-whole"])
        before = (out / "cuts.jsonl.gz").read_bytes()
        _extract(model, data, out, "--format", "kaldi,lhotse", "--nj", "2", "--job", "1")  # a rerun resumes
        assert gzip.decompress((out / "cuts.jsonl.gz").read_bytes()) == gzip.decompress(before)
        assert not list(out.glob(".lhotse_units*"))


def test_dedup_and_a_missing_lhotse_are_refused_in_one_line(tmp_path, corpus, capsys, monkeypatch):
    manifest, kaldi, _ = corpus
    model = tiny_codec_file(tmp_path / "model.pt")
    args = ["extract-units", "--model", str(model), "--data", str(kaldi), "--out", str(tmp_path / "o")]
    assert main([*args, "--format", "lhotse", "--dedup"]) == 2
    assert "--dedup with --format lhotse" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "lhotse", None)  # as if it were not installed
    assert main([*args, "--format", "lhotse"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'vqaudio[lhotse]'" in err
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(gzip.decompress(manifest.read_bytes()))
    with pytest.raises(UserError, match=r"needs the lhotse package .*vqaudio\[lhotse\]"):
        read_data_dir(copy)


def test_training_data_and_references_may_be_cut_manifests(tmp_path, corpus):
    manifest, kaldi, same = corpus
    from vqaudio.data import CropDataset

    crops = CropDataset(manifest, SR, None)
    assert [u.utt_id for u in crops.utts] == sorted(same)
    for i, utt in enumerate(sorted(same)):
        assert np.array_equal(crops[i][0].numpy(), CropDataset(kaldi, SR, None)[i][0].numpy()), utt
    model = tiny_codec_file(tmp_path / "model.pt")
    hyp = tmp_path / "hyp"
    _extract(model, manifest, tmp_path / "units")
    assert main(["resynth", "--model", str(model), "--units", str(tmp_path / "units"), "--out", str(hyp)]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--ref", str(manifest), "--hyp", str(hyp), "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_utterances"] == 4


def test_utterances_of_one_file_share_its_recording_wherever_they_sort(tmp_path):
    """Two utterances of one file with another file's between them (in id order): both cuts carry the recording
    made for the first of them."""
    from vqaudio.data.kaldi import Utterance
    from vqaudio.units.toolkits import source_cuts

    x, y = recordings(tmp_path, 2)
    utts = [Utterance("u1", str(x)), Utterance("u2", str(y)), Utterance("u3", str(x))]
    samples = {u.utt_id: sf.info(u.source).frames for u in utts}
    cuts = list(
        source_cuts(kaldi_dir(tmp_path / "data", [(u.utt_id, u.source, None, None) for u in utts]), utts, samples, SR)
    )
    assert [c.recording.id for c in cuts] == ["u1", "u2", "u1"]
