"""Units: formats round-trip, dedup, chunked = whole-file encode, extraction resume and bad files, resynth,
evaluation, and metrics against hand-computed values."""

from __future__ import annotations

import math
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio import metrics
from vqaudio.cli.main import main
from vqaudio.models import Codec, CodecConfig
from vqaudio.models.context import length_groups
from vqaudio.quantize import QuantizerConfig
from vqaudio.units import (
    UnitsInfo,
    dedup_units,
    read_fairseq,
    read_info,
    read_levels,
    read_units,
    write_fairseq,
    write_info,
    write_units,
)

from .speech import SR, synth_utterance

ROOT = pathlib.Path(__file__).resolve().parents[1]


def small_codec(nq=2, lstm=0, decoder=CodecConfig.decoder, causal=False) -> Codec:
    torch.manual_seed(0)
    q = QuantizerConfig(kind="vq", n_q=nq, codebook_size=64, kmeans_init=False, dead_code_threshold=0.0)
    small = dict(channels=4, encoder_channels=4, latent_dim=16, max_channels=32, decoder_dim=16, decoder_blocks=2)
    cfg = CodecConfig(encoder="seanet", **small, quantizer=q, lstm=lstm, decoder=decoder, causal=causal)
    return Codec(cfg).eval()


@pytest.fixture
def model(tmp_path) -> pathlib.Path:
    return small_codec().save_pretrained(tmp_path / "model.pt")


def make_data_dir(tmp_path: pathlib.Path, n=6, bad: dict | None = None) -> pathlib.Path:
    audio, data = tmp_path / "audio", tmp_path / "data"
    audio.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        utt = f"spk{i % 2}-utt{i:03d}"
        path = audio / f"{utt}.flac"
        sf.write(path, synth_utterance(0.5 + 0.25 * (i % 3), seed=i), SR)  # repeated lengths batch together
        lines.append(f"{utt} {path}\n")
    for utt, path in (bad or {}).items():
        lines.append(f"{utt} {path}\n")
    (data / "wav.scp").write_text("".join(sorted(lines)))
    return data


def test_kaldi_units_round_trip_and_errors(tmp_path):
    table = {"b": [3, 1, 2], "a": [0, 0, 5], "c": []}
    path = write_units(tmp_path / "units", table)
    assert path.read_text().splitlines()[0].startswith("a ")
    assert read_units(path) == table
    (tmp_path / "bad").write_text("a 1 2\nb 1 x\n")
    with pytest.raises(ValueError, match=r"bad:2: units must be integers"):
        read_units(tmp_path / "bad")
    (tmp_path / "dup").write_text("a 1\na 2\n")
    with pytest.raises(ValueError, match=r"dup:2: duplicate utterance 'a'"):
        read_units(tmp_path / "dup")


def test_fairseq_round_trip(tmp_path):
    rows = [("x/a.flac", 16000, [1, 2, 3]), ("y/b.flac", 8000, [4])]
    write_fairseq(tmp_path, "dev", "/root/audio", rows)
    assert read_fairseq(tmp_path, "dev") == ("/root/audio", rows)


def test_units_info_round_trip(tmp_path):
    info = UnitsInfo("abc", 16000, 50.0, 1024, 8, False, 3, 1)
    write_info(tmp_path, info)
    assert read_info(tmp_path) == info
    with pytest.raises(ValueError, match="units.json not found"):
        read_info(tmp_path / "nowhere")


def test_dedup_units():
    assert dedup_units([5, 5, 3, 3, 3, 5, 5]) == [5, 3, 5]
    assert dedup_units([]) == []
    assert dedup_units([(1, 2), (1, 2), (1, 3)]) == [(1, 2), (1, 3)]


@pytest.mark.parametrize("lstm", [0, 2])
def test_chunked_encode_equals_whole_file_encode(lstm):
    codec = small_codec(lstm=lstm)
    wav = torch.from_numpy(synth_utterance(7.3, seed=3))[None, None]
    whole = codec.encode(wav)
    for chunk_seconds in (0.5, 1.0, 2.7):
        chunked = codec.encode_chunked(wav, chunk_seconds=chunk_seconds)
        assert chunked.shape == whole.shape
        assert float((chunked == whole).float().mean()) > 0.999, chunk_seconds
    assert codec.encoder.receptive_field > codec.hop_length


@pytest.mark.parametrize(
    "lstm, batch_convs, causal", [(0, False, False), (2, False, False), (2, True, False), (0, True, True)]
)
def test_encode_batch_equals_each_waveform_alone(lstm, batch_convs, causal):
    codec = small_codec(lstm=lstm, causal=causal).double()  # float64: batching's rounding cannot flip a unit
    with torch.no_grad():  # non-zero biases: padding then differs from the convs' own zero padding
        for name, param in codec.encoder.named_parameters():
            if name.endswith("bias"):
                param.uniform_(-0.5, 0.5)
    lengths = [SR * 2 + 17, 800, SR * 3, SR + 320, 5, SR * 2]
    wavs = [torch.from_numpy(synth_utterance(n / SR, seed=i)[:n]).double() for i, n in enumerate(lengths)]
    batch = codec.encode_batch(wavs, chunk_seconds=2.5, batch_convs=batch_convs)  # the 3 s one in chunks
    for wav, codes in zip(wavs, batch, strict=True):
        alone = codec.encode(wav[None, None])[0]
        assert codes.shape == alone.shape == (2, math.ceil(wav.shape[0] / 320))
        assert torch.equal(codes, alone)
    assert [c.shape[0] for c in codec.encode_batch(wavs[:2], n_q=1)] == [1, 1]
    assert codec.encode_batch([]) == []


def test_float32_encode_batch_keeps_units():
    codec = small_codec(lstm=2)
    wavs = [torch.from_numpy(synth_utterance(s, seed=i)) for i, s in enumerate((1.3, 2.0, 0.7, 2.2, 1.9))]
    batch = torch.cat(codec.encode_batch(wavs), dim=-1)
    alone = torch.cat([codec.encode(w[None, None])[0] for w in wavs], dim=-1)
    assert float((batch == alone).all(0).float().mean()) > 0.999


def test_kmeans_encode_batch_equals_each_waveform_alone(tmp_path):
    from vqaudio.units.kmeans import KMeansConfig, train_kmeans

    data = make_data_dir(tmp_path)
    cfg = KMeansConfig(feature="mfcc", k=8, cmvn=True, context=1)  # cmvn: statistics over each waveform
    km, _ = train_kmeans(data, tmp_path / "km.pt", cfg, iters=2, progress=False)
    wavs = [torch.from_numpy(synth_utterance(s, seed=i)) for i, s in enumerate((1.3, 0.5, 2.01))]
    for wav, units in zip(wavs, km.encode_batch(wavs), strict=True):
        assert torch.equal(units, km.encode(wav[None, None])[0])


def test_length_groups_cover_every_index_once_at_the_least_cost():
    import itertools

    def cost(groups, lengths, flat):
        return sum(max(lengths[i] for i in g) * max(flat, len(g)) for g in groups)

    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(1, 900, 200)] + [5000, 1]
    groups = length_groups(lengths, size=16, flat=4)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for group in groups:
        sizes = [lengths[i] for i in group]
        assert 1 <= len(group) <= 16 and sizes == sorted(sizes, reverse=True)
    assert [lengths[g[0]] for g in groups] == sorted((lengths[g[0]] for g in groups), reverse=True)
    for _ in range(20):  # the least cost over every partition of up to 6 items, whatever their order
        small = [int(n) for n in rng.integers(1, 100, rng.integers(1, 7))]
        best = min(
            cost(p, small, 3)
            for k in range(1, len(small) + 1)
            for labels in itertools.product(range(k), repeat=len(small))
            for p in [[[i for i, lab in enumerate(labels) if lab == g] for g in range(k)]]
            if all(p) and all(len(g) <= 4 for g in p)
        )
        assert cost(length_groups(small, size=4, flat=3), small, 3) == best, small
    assert sorted(len(g) for g in length_groups([100] * 40, size=16, flat=16)) == [8, 16, 16]
    with pytest.raises(ValueError, match="size and flat must be >= 1"):
        length_groups([3], size=0)


def test_resumed_extraction_batches_every_utterance_with_the_same_companions(tmp_path, model, monkeypatch):
    data = make_data_dir(tmp_path, n=30)
    seen: list[list[int]] = []
    encode_batch = Codec.encode_batch

    def record(self, wavs, *args, **kwargs):
        seen.append(sorted(int(w.shape[-1]) for w in wavs))
        return encode_batch(self, wavs, *args, **kwargs)

    monkeypatch.setattr(Codec, "encode_batch", record)
    ref, out = tmp_path / "ref", tmp_path / "out"
    args = ["--model", str(model), "--data", str(data), "--batch-seconds", "3"]
    assert main(["extract-units", *args, "--out", str(ref)]) == 0
    full = list(seen)
    assert len(full) > 3
    work = out / ".work"  # killed in the middle of the third batch's lines
    work.mkdir(parents=True)
    lines = (ref / ".work" / "job1of1.jsonl").read_text().splitlines(keepends=True)
    cut = len(full[0]) + len(full[1]) + 1
    (work / "job1of1.jsonl").write_text("".join(lines[:cut]) + lines[cut][:20])
    (work / "state.json").write_bytes((ref / ".work" / "state.json").read_bytes())
    seen.clear()
    assert main(["extract-units", *args, "--out", str(out)]) == 0
    assert seen == full[2:]  # the first two batches skipped, the cut one encoded whole
    assert (out / "units").read_bytes() == (ref / "units").read_bytes()
    assert len((work / "job1of1.jsonl").read_text().splitlines()) == 30


def test_extract_units_formats_and_resynth_and_evaluate(tmp_path, model):
    data = make_data_dir(tmp_path)
    out = tmp_path / "units"
    rc = main(
        ["extract-units", "--model", str(model), "--data", str(data), "--out", str(out), "--format", "kaldi,fairseq"]
    )
    assert rc == 0
    codec = Codec.from_pretrained(model)
    levels = read_levels(out)
    info = read_info(out)
    assert info.n_q == 2 and info.codebook_size == 64 and info.frame_rate == 50.0 and info.num_utterances == 6
    scp = dict(line.split() for line in (data / "wav.scp").read_text().splitlines())
    for utt, path in scp.items():
        wav = torch.from_numpy(sf.read(path, dtype="float32")[0])[None, None]
        expected = codec.encode(wav)[0].tolist()
        assert levels[utt] == expected  # batched extraction = encoding the file alone
        assert len(levels[utt][0]) == math.ceil(wav.shape[-1] / codec.hop_length)
    root, rows = read_fairseq(out, "data")
    assert [pathlib.Path(rel).stem for rel, _, _ in rows] == sorted(scp)
    assert [units for _, _, units in rows] == [levels[u][0] for u in sorted(scp)]
    assert (out / "tokens.txt").read_text().splitlines()[:2] == ["<blank>", "0"]
    assert (out / "failed.txt").read_text() == ""
    # resynth from the Kaldi units and from the fairseq .km
    hyp = tmp_path / "hyp"
    assert main(["resynth", "--model", str(model), "--units", str(out / "units"), "--out", str(hyp)]) == 0
    for utt in scp:
        wav, sr = sf.read(hyp / f"{utt}.wav")
        assert sr == SR and len(wav) == len(levels[utt][0]) * codec.hop_length
    km_hyp = tmp_path / "hyp_km"
    assert main(["resynth", "--model", str(model), "--units", str(out / "data.km"), "--out", str(km_hyp)]) == 0
    for utt, path in scp.items():
        assert len(sf.read(km_hyp / f"{utt}.wav")[0]) == sf.info(path).frames  # exact lengths from the .tsv
    ev = tmp_path / "eval"
    assert main(["evaluate", "--ref", str(data), "--hyp", str(hyp), "--out", str(ev), "--units", str(out)]) == 0
    import json

    summary = json.loads((ev / "metrics.json").read_text())
    assert summary["num_utterances"] == 6 and summary["bitrate_bps"] == pytest.approx(50 * 2 * 6)
    assert summary["token_rate"] == 100 and 0 < summary["codebook_usage"] <= 1
    assert "| SI-SDR dB (higher) |" in (ev / "RESULTS.md").read_text()
    assert (ev / "code_usage.png").is_file() and len(list(ev.glob("spectrogram_*.png"))) == 3
    assert len((ev / "per_utterance.csv").read_text().splitlines()) == 7


def test_dedup_extraction_and_levels(tmp_path, model):
    data = make_data_dir(tmp_path)
    full, dd = tmp_path / "full", tmp_path / "dedup"
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(full)]) == 0
    assert (
        main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(dd), "--dedup", "--n-q", "1"])
        == 0
    )
    a, b = read_units(full / "units"), read_units(dd / "units")
    full_levels = read_levels(full)
    for utt in a:
        assert b[utt] == dedup_units(full_levels[utt][0])
    assert read_info(dd).dedup and read_info(dd).n_q == 1
    assert not (dd / "units.level1").exists()
    with pytest.raises(ValueError, match="deduplicated"):
        from vqaudio.units.resynth import resynthesize

        resynthesize(model, dd, tmp_path / "x")


def test_corrupt_file_is_reported_and_skipped(tmp_path, model):
    junk = tmp_path / "junk.flac"
    junk.write_bytes(b"\x00" * 500)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), SR)
    data = make_data_dir(tmp_path, bad={"zz-junk": junk, "zz-empty": empty, "zz-missing": tmp_path / "nope.wav"})
    out = tmp_path / "units"
    rc = main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(out)])
    assert rc == 1  # not every utterance was extracted
    units = read_units(out / "units")
    assert len(units) == 6 and not any(u.startswith("zz-") for u in units)
    failed = dict(line.split("\t", 1) for line in (out / "failed.txt").read_text().splitlines())
    assert set(failed) == {"zz-junk", "zz-empty", "zz-missing"}
    assert "empty audio" in failed["zz-empty"] and "unreadable" in failed["zz-junk"]


def test_resampled_and_stereo_input_is_converted(tmp_path, model):
    data = tmp_path / "data"
    data.mkdir()
    wav = synth_utterance(1.0, seed=5)
    sf.write(tmp_path / "stereo22k.wav", np.stack([wav, wav], 1)[::1], 22050)
    (data / "wav.scp").write_text(f"utt1 {tmp_path / 'stereo22k.wav'}\n")
    out = tmp_path / "units"
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    n = len(read_units(out / "units")["utt1"])
    assert n == math.ceil(round(len(wav) * SR / 22050) / 320)


def test_sharded_jobs_merge_to_the_single_job_result(tmp_path, model):
    data = make_data_dir(tmp_path, n=7)
    one, three = tmp_path / "one", tmp_path / "three"
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(one)]) == 0
    for job in (2, 3, 1):
        assert (
            main(
                [
                    "extract-units",
                    "--model",
                    str(model),
                    "--data",
                    str(data),
                    "--out",
                    str(three),
                    "--nj",
                    "3",
                    "--job",
                    str(job),
                ]
            )
            == 0
        )
        assert (three / "units").exists() == (job == 1)  # merged once all three are done
    assert (three / "units").read_bytes() == (one / "units").read_bytes()
    assert (three / "units.level1").read_bytes() == (one / "units.level1").read_bytes()


def test_killed_extraction_resumes_without_duplicates(tmp_path, model):
    data = make_data_dir(tmp_path, n=40)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(ref)]) == 0
    # simulate a kill mid-write: a job file with some complete lines and one cut in half
    work = out / ".work"
    work.mkdir(parents=True)
    full_lines = (ref / ".work" / "job1of1.jsonl").read_text().splitlines(keepends=True)
    (work / "job1of1.jsonl").write_text("".join(full_lines[:9]) + full_lines[9][: len(full_lines[9]) // 2])
    (work / "state.json").write_bytes((ref / ".work" / "state.json").read_bytes())  # written before any line
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(out)]) == 0
    assert (out / "units").read_bytes() == (ref / "units").read_bytes()
    assert (out / "units.level1").read_bytes() == (ref / "units.level1").read_bytes()
    lines = (work / "job1of1.jsonl").read_text().splitlines()
    assert len(lines) == 40 and len({line.split(",")[0] for line in lines}) == 40


def test_a_real_kill_resumes_to_byte_identical_output(tmp_path, model):
    data = make_data_dir(tmp_path, n=60)
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert (
        main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(ref), "--batch-seconds", "1"])
        == 0
    )
    cmd = [
        sys.executable,
        "-m",
        "vqaudio.cli.main",
        "extract-units",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--batch-seconds",
        "1",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = out / ".work" / "job1of1.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (job.exists() and job.stat().st_size > 0):
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == 0
    assert (out / "units").read_bytes() == (ref / "units").read_bytes()


def test_encode_decode_cli_text_units(tmp_path, model):
    wav_path = tmp_path / "a.wav"
    sf.write(wav_path, synth_utterance(1.1, seed=9), SR)
    assert main(["encode", "--model", str(model), str(wav_path), str(tmp_path / "a.txt")]) == 0
    levels = (tmp_path / "a.txt").read_text().splitlines()
    assert len(levels) == 2 and len(levels[0].split()) == math.ceil(1.1 * SR / 320)
    assert main(["decode", "--model", str(model), str(tmp_path / "a.txt"), str(tmp_path / "b.wav")]) == 0
    assert len(sf.read(tmp_path / "b.wav")[0]) == len(levels[0].split()) * 320  # text keeps no length


def test_si_sdr_of_scaled_copy_and_known_snr():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(32000)
    assert metrics.si_sdr(ref, 0.3 * ref) > 100
    noise = rng.standard_normal(32000)
    noise -= noise.mean()
    noise -= ref * np.dot(noise, ref) / np.dot(ref, ref)  # orthogonal to the reference
    noise *= np.linalg.norm(ref) / np.linalg.norm(noise) / 10 ** (10 / 20)  # SNR 10 dB
    assert metrics.si_sdr(ref, ref + noise) == pytest.approx(10.0, abs=0.05)


def test_stoi_pesq_and_distances_on_speech_like_signals():
    clean = synth_utterance(3.0, seed=1).astype(np.float64)
    rng = np.random.default_rng(1)
    noisy = clean + 0.05 * rng.standard_normal(clean.size)
    assert metrics.stoi(clean, clean, SR) > 0.99
    assert metrics.stoi(clean, noisy, SR) < metrics.stoi(clean, clean, SR)
    assert metrics.pesq_wb(clean, clean, SR) > 4.0
    assert metrics.pesq_wb(clean, noisy, SR) < metrics.pesq_wb(clean, clean, SR)
    assert metrics.log_mel_distance(clean, clean, SR) == pytest.approx(0.0, abs=1e-6)
    assert metrics.log_mel_distance(clean, noisy, SR) > 0.05
    assert metrics.stft_distance(clean, clean) == pytest.approx(0.0, abs=1e-6)


def test_unit_stats():
    s = metrics.unit_stats([[0, 1, 2, 3], [0, 1, 2, 3]], 8)
    assert s["usage"] == 0.5 and s["entropy_bits"] == pytest.approx(2.0) and s["perplexity"] == pytest.approx(4.0)


def _utts_and_reader(fail: str, error: type[Exception]):
    from vqaudio.data.kaldi import Utterance

    utts = [Utterance(f"u{i}", f"/x/u{i}.wav") for i in range(7)]
    started: list[str] = []

    def read(u):
        started.append(u.utt_id)
        if u.utt_id == fail:
            raise error(f"{u.utt_id}.wav: not a sound file")
        return np.full(3, int(u.utt_id[1:]), dtype=np.float32)

    return utts, started, read


def test_audio_comes_in_order_without_rereading_and_failures_in_place():
    from vqaudio.data.audio import AudioError
    from vqaudio.units.extract import _audio_in_order

    utts, started, read = _utts_and_reader("u3", AudioError)
    got = [(u.utt_id, wav) for u, wav in _audio_in_order(utts, {"u1": 10, "u4": 10}, read)]
    assert [x for x, _ in got] == [u.utt_id for u in utts]
    assert started == ["u0", "u2", "u3", "u5", "u6"]  # those extracted before are never read
    kinds = {x: (None if w is None else type(w).__name__) for x, w in got}
    assert kinds == {
        "u0": "ndarray",
        "u1": None,
        "u2": "ndarray",
        "u3": "AudioError",
        "u4": None,
        "u5": "ndarray",
        "u6": "ndarray",
    }
    assert float(got[5][1][0]) == 5.0


def test_a_bug_in_reading_reaches_the_caller_after_the_utterances_before_it():
    from vqaudio.units.extract import _audio_in_order

    utts, _, read = _utts_and_reader("u4", RuntimeError)
    got = []
    with pytest.raises(RuntimeError, match="u4.wav"):
        for u, _wav in _audio_in_order(utts, {}, read):
            got.append(u.utt_id)
    assert got == ["u0", "u1", "u2", "u3"]
