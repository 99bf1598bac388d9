"""Codes files and the encode/decode command line: bit packing, exact lengths, sizes at the nominal
bitrate, damaged files, other models, directories, globs and overwriting."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.models import Codec
from vqaudio.units.codesfile import CodesHeader, pack_codes, read_codes_file, unpack_codes, write_codes_file

from .speech import SR, synth_utterance
from .test_units import ROOT, small_codec


@pytest.fixture
def model(tmp_path):
    return small_codec().save_pretrained(tmp_path / "model.pt")


@pytest.mark.parametrize("k", [2, 3, 64, 1000, 1024, 4096, 65536])
def test_pack_unpack_round_trip(k):
    rng = np.random.default_rng(k)
    bits = max(1, math.ceil(math.log2(k)))
    for n_q, frames in ((1, 1), (3, 7), (8, 101)):
        codes = rng.integers(0, k, size=(n_q, frames))
        payload = pack_codes(codes, bits)
        assert len(payload) == math.ceil(n_q * frames * bits / 8)
        assert np.array_equal(unpack_codes(payload, n_q, frames, bits), codes)


def test_pack_layout_is_frame_major_msb_first():
    codes = np.array([[1, 2], [3, 0]])  # (n_q=2, T=2), 2 bits each: frame 0 = (1, 3), frame 1 = (2, 0)
    assert pack_codes(codes, 2) == bytes([0b01111000])


def test_file_size_is_the_nominal_bitrate_plus_the_header(tmp_path):
    codes = np.random.default_rng(0).integers(0, 1024, size=(8, 50 * 60))  # one minute at 50 frames/s, 4 kbps
    header = CodesHeader("0" * 64, 16000, 16000 * 60, 8, 1024, 50.0)
    path = write_codes_file(tmp_path / "a.vqc", codes, header)
    # magic, version, length, JSON, and the CRC of the whole file
    header_bytes = 9 + int.from_bytes(path.read_bytes()[5:9], "little") + 4
    assert path.stat().st_size == 4000 * 60 // 8 + header_bytes  # bitrate x duration + header, exactly
    assert header_bytes < 400
    back, h = read_codes_file(path)
    assert np.array_equal(back, codes) and h.num_samples == 16000 * 60 and h.bits == 10


def test_damaged_files_are_one_line_errors(tmp_path):
    codes = np.random.default_rng(1).integers(0, 64, size=(2, 40))
    path = write_codes_file(tmp_path / "a.vqc", codes, CodesHeader("x", 16000, 12800, 2, 64, 50.0))
    data = path.read_bytes()
    cases = {
        "truncated": data[:-5],
        "flipped": data[:-3] + bytes([data[-3] ^ 0x10]) + data[-2:],
        "header": data[:12],
        "empty": b"",
        "other": b"RIFF" + data[4:],
    }
    messages = {
        "truncated": "truncated",
        "flipped": "CRC",
        "header": "truncated",
        "empty": "magic",
        "other": "magic",
    }
    for name, blob in cases.items():
        bad = tmp_path / f"{name}.vqc"
        bad.write_bytes(blob)
        with pytest.raises(UserError, match=messages[name]):
            read_codes_file(bad)


def test_encode_decode_restore_the_exact_length_and_codes(tmp_path, model, capsys):
    wav = synth_utterance(1.13, seed=3)
    sf.write(tmp_path / "a.flac", wav, SR)
    assert main(["encode", "--model", str(model), str(tmp_path / "a.flac"), "-o", str(tmp_path / "a.vqc")]) == 0
    assert "real time" in capsys.readouterr().out
    codec = Codec.from_pretrained(model)
    codes, header = read_codes_file(tmp_path / "a.vqc")
    assert np.array_equal(codes, codec.encode(torch.from_numpy(wav)[None, None])[0].numpy())
    assert header.num_samples == len(wav) and header.n_q == 2 and header.codebook_size == 64
    assert main(["decode", "--model", str(model), str(tmp_path / "a.vqc"), "-o", str(tmp_path / "b.wav")]) == 0
    out, sr = sf.read(tmp_path / "b.wav", dtype="float32")
    assert sr == SR and len(out) == len(wav)
    expected = codec.decode_utterance(torch.from_numpy(codes), length=len(wav)).numpy()
    assert np.abs(out - expected).max() < 1e-4  # 16-bit PCM


def test_decode_refuses_another_models_codes_unless_told(tmp_path, model, capsys):
    sf.write(tmp_path / "a.wav", synth_utterance(0.5, seed=4), SR)
    assert main(["encode", "--model", str(model), str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.vqc")]) == 0
    other = small_codec()
    with torch.no_grad():
        next(other.decoder.parameters()).add_(1.0)  # a zero bias: doubling it would leave the same model
    other_path = other.save_pretrained(tmp_path / "other.pt")
    capsys.readouterr()
    argv = ["decode", "--model", str(other_path), str(tmp_path / "a.vqc"), "-o", str(tmp_path / "b.wav")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "made by another model" in err and err.count("\n") == 1
    assert not (tmp_path / "b.wav").exists()
    assert main([*argv, "--any-model"]) == 0


def test_existing_outputs_need_force(tmp_path, model, capsys):
    sf.write(tmp_path / "a.wav", synth_utterance(0.5, seed=5), SR)
    argv = ["encode", "--model", str(model), str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.vqc")]
    assert main(argv) == 0
    before = (tmp_path / "a.vqc").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2 and "exists; pass -f/--force" in capsys.readouterr().err
    assert main([*argv, "-f"]) == 0 and (tmp_path / "a.vqc").read_bytes() == before


def test_directories_are_mirrored_and_globs_expanded(tmp_path, model):
    src = tmp_path / "corpus"
    (src / "spk1").mkdir(parents=True)
    sf.write(src / "spk1" / "a.wav", synth_utterance(0.4, seed=6), SR)
    sf.write(src / "b.flac", synth_utterance(0.6, seed=7), SR)
    (src / "notes.txt").write_text("not audio")
    assert main(["encode", "--model", str(model), str(src), "-o", str(tmp_path / "codes")]) == 0
    assert sorted(p.relative_to(tmp_path / "codes").as_posix() for p in (tmp_path / "codes").rglob("*.vqc")) == [
        "b.vqc",
        "spk1/a.vqc",
    ]
    assert main(["decode", "--model", str(model), str(tmp_path / "codes"), "-o", str(tmp_path / "wavs")]) == 0
    assert len(sf.read(tmp_path / "wavs" / "spk1" / "a.wav")[0]) == int(0.4 * SR)
    pattern = str(src / "**" / "*.wav")
    assert main(["encode", "--model", str(model), pattern, "-o", str(tmp_path / "g"), "--suffix", ".npy"]) == 0
    arr = np.load(tmp_path / "g" / "a.npy")
    assert arr.shape == (2, math.ceil(0.4 * SR / 320)) and arr.dtype == np.int16


def test_help_and_version_do_not_import_torch():
    code = (
        "import sys\nfrom vqaudio.cli.main import main\n"
        "for argv in (['--version'], ['--help'], ['encode', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_extract_units_writes_espnet_npy_and_scp(tmp_path, model):
    from vqaudio.units import read_levels

    from .test_units import make_data_dir

    data, out = make_data_dir(tmp_path, n=3), tmp_path / "units"
    argv = ["extract-units", "--model", str(model), "--data", str(data), "--out", str(out), "--format", "kaldi,npy"]
    assert main(argv) == 0
    scp = dict(line.split(" ", 1) for line in (out / "codes.scp").read_text().splitlines())
    levels = read_levels(out)
    assert sorted(scp) == sorted(levels)
    for utt, path in scp.items():
        arr = np.load(path)
        assert arr.dtype == np.int16 and arr.shape == (len(levels[utt][0]), 2)
        assert arr.T.tolist() == levels[utt]
