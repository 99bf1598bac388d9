"""Bad input that once gave a wrong output in silence or a traceback: each case of the bad-input list of
2026-12-02 (codes files, batch encode/decode, model identity, file modes, unit scoring, non-finite weights,
ONNX, damaged model folders, streaming state, swapped layers) as a one-line error or the right output."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file, save_file

from vqaudio.checkpoint import model_checksum
from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.models import Codec, CodecConfig
from vqaudio.models.wavenet import WaveNetConfig, WaveNetPrior
from vqaudio.units import read_info, write_info
from vqaudio.units.codesfile import CodesHeader, read_codes_file, write_codes_file
from vqaudio.units.quality import evaluate_units

from .speech import SR, synth_utterance
from .test_trust import one_error_line
from .test_unit_quality import _synthetic_units
from .test_units import make_data_dir, small_codec

HOP = 320


@pytest.fixture
def model(tmp_path) -> pathlib.Path:
    return small_codec().save_pretrained(tmp_path / "model.pt")


def other_codec() -> Codec:
    codec = small_codec()
    with torch.no_grad():
        next(codec.decoder.parameters()).add_(1.0)
    return codec


# --- F1: codes files whose header cannot lie ------------------------------------------------------------------

GOOD = dict(
    model_sha256="ab" * 32,
    sample_rate=16000,
    num_samples=41600,
    n_q=2,
    codebook_size=64,
    frame_rate=50.0,
    num_frames=130,
    bits=6,
    payload_crc32=0,
    vqaudio_version="0",
)


def version1_file(path: pathlib.Path, payload: bytes | None = None, **fields) -> pathlib.Path:
    """A codes file in the version 1 layout (no file CRC) with header ``fields`` over GOOD's, as a crafted or
    edited file would be; the payload is random codes of GOOD's size unless given."""
    if payload is None:
        codes = np.random.default_rng(0).integers(0, 64, size=(2, 130))
        flat = ((codes.T.reshape(-1)[:, None] >> np.arange(5, -1, -1)) & 1).astype(np.uint8)
        payload = np.packbits(flat, axis=None).tobytes()
    header = {**GOOD, "payload_crc32": zlib.crc32(payload), **fields}
    meta = json.dumps(header).encode()
    path.write_bytes(struct.pack("<4sBI", b"VQAC", 1, len(meta)) + meta + payload)
    return path


def test_a_version_1_file_of_good_fields_still_reads(tmp_path):
    codes, header = read_codes_file(version1_file(tmp_path / "a.vqc"))
    assert codes.shape == (2, 130) and header.num_samples == 41600


@pytest.mark.parametrize(
    "fields, payload, message",
    [
        ({"num_samples": 11600}, None, "num_samples 11600 does not fit 130 frames"),  # row 4: 72 % of the audio gone
        ({"num_samples": 41609}, None, "num_samples must lie in"),  # row 4
        ({"num_samples": 91600}, None, "num_samples must lie in"),  # row 4: zero-padded to 2.2x
        ({"num_samples": 10**10}, None, "num_samples must lie in"),  # row 5: 40 GB
        ({"bits": 0, "n_q": 1000, "num_frames": 10**9}, b"", "bits must be 6"),  # row 6: 7.3 TiB
        ({"bits": 0}, b"", "bits must be 6"),  # row 7: all-zero codes
        ({"n_q": "2"}, None, "n_q must be an integer"),  # row 12
        ({"n_q": 2.0}, None, "n_q must be an integer"),
        ({"n_q": -2, "num_frames": -130}, None, "n_q must lie in"),
        ({"n_q": 0, "num_frames": 0}, b"", "n_q must lie in"),
        ({"num_samples": 0}, None, "num_samples must lie in"),  # row 13
        ({"num_samples": -5}, None, "num_samples must lie in"),
        ({"num_samples": "41600"}, None, "num_samples must be an integer"),
        ({"model_sha256": None}, None, "model_sha256 must be a non-empty string"),
        ({"frame_rate": 70.0}, None, "does not fit|must lie in"),
    ],
)
def test_header_fields_are_checked_before_anything_is_allocated(tmp_path, fields, payload, message):
    path = version1_file(tmp_path / "a.vqc", payload, **fields)
    with pytest.raises(UserError, match=message):
        read_codes_file(path)


def test_an_edited_header_fails_the_file_crc(tmp_path, model, capsys):
    codes = np.random.default_rng(0).integers(0, 64, size=(2, 130))
    path = write_codes_file(tmp_path / "a.vqc", codes, CodesHeader("ab" * 32, 16000, 41600, 2, 64, 50.0))
    data = path.read_bytes()
    assert b'"num_samples":41600' in data
    path.write_bytes(data.replace(b'"num_samples":41600', b'"num_samples":41599'))  # still fits 130 frames
    with pytest.raises(UserError, match="fails its CRC check"):
        read_codes_file(path)
    assert main(["decode", "--model", str(model), str(path), "-o", str(tmp_path / "x.wav")]) == 2
    assert "CRC" in one_error_line(capsys) and not (tmp_path / "x.wav").exists()


# --- F2 / F3: batch encode and decode --------------------------------------------------------------------------


def test_an_existing_second_input_is_never_the_output(tmp_path, model, capsys):
    x, y = tmp_path / "x.flac", tmp_path / "y.flac"
    sf.write(x, synth_utterance(0.3, seed=1), SR)
    sf.write(y, synth_utterance(0.3, seed=2), SR)
    before = y.read_bytes()
    assert main(["encode", "--model", str(model), "-f", str(x), str(y)]) == 2  # row 28
    assert "-o" in one_error_line(capsys) and y.read_bytes() == before


@pytest.mark.parametrize("name", ["x.mp3", "x.wav", "x.bin"])
def test_encode_refuses_an_output_that_is_not_a_codes_file(tmp_path, model, capsys, name):
    sf.write(tmp_path / "a.flac", synth_utterance(0.3, seed=1), SR)
    assert main(["encode", "--model", str(model), str(tmp_path / "a.flac"), "-o", str(tmp_path / name)]) == 2
    assert ".vqc" in one_error_line(capsys) and not (tmp_path / name).exists()  # row 29


def test_a_bad_file_does_not_stop_a_directory_and_a_rerun_resumes(tmp_path, model, capsys):
    src, out = tmp_path / "mixed", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "a_good.wav", synth_utterance(0.3, seed=1), SR)
    (src / "b_bad.wav").write_text("not audio")
    sf.write(src / "c_good.wav", synth_utterance(0.4, seed=2), SR)
    sf.write(src / "sub" / "zero.wav", np.zeros(0, dtype=np.float32), SR)
    sf.write(src / "sub" / "good.wav", synth_utterance(0.2, seed=3), SR)
    (src / "notes.md").write_text("not an input")
    assert main(["encode", "--model", str(model), str(src), "-o", str(out)]) == 1  # row 25
    err = capsys.readouterr().err
    assert "b_bad.wav" in err and "zero.wav" in err and "notes.md" in err and "Traceback" not in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.vqc"))
    assert written == ["a_good.vqc", "c_good.vqc", "sub/good.vqc"]
    stamp = (out / "a_good.vqc").stat().st_mtime_ns
    (src / "b_bad.wav").unlink()
    (src / "sub" / "zero.wav").unlink()
    assert main(["encode", "--model", str(model), str(src), "-o", str(out)]) == 0  # row 26: resumes
    assert (out / "a_good.vqc").stat().st_mtime_ns == stamp  # kept, not redone


def test_decode_of_a_codes_dir_with_a_readme_writes_every_good_file(tmp_path, model, capsys):
    src = tmp_path / "codes"
    src.mkdir()
    for name, seed in (("b", 1), ("c", 2)):
        sf.write(tmp_path / f"{name}.wav", synth_utterance(0.3, seed=seed), SR)
        assert (
            main(["encode", "--model", str(model), str(tmp_path / f"{name}.wav"), "-o", str(src / f"{name}.vqc")]) == 0
        )
    (src / "README.txt").write_text("these are codes\n")  # row 3 of F3: sorts first
    capsys.readouterr()
    assert main(["decode", "--model", str(model), str(src), "-o", str(tmp_path / "wavs")]) == 1
    assert "README.txt" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "wavs").iterdir()) == ["b.wav", "c.wav"]


def test_an_output_under_a_regular_file_is_one_line(tmp_path, model, capsys):
    sf.write(tmp_path / "a.wav", synth_utterance(0.3, seed=1), SR)
    (tmp_path / "file").write_text("")
    argv = ["encode", "--model", str(model), str(tmp_path / "a.wav"), "-o", str(tmp_path / "file" / "a.vqc")]
    assert main(argv) == 2
    assert "is a file" in one_error_line(capsys)


# --- F4 / item 3: model identity by content --------------------------------------------------------------------


def test_the_same_model_as_a_file_and_a_folder_has_one_identity(tmp_path):
    codec = small_codec()
    pt, folder = codec.save_pretrained(tmp_path / "m.pt"), codec.save_pretrained(tmp_path / "m_dir")
    assert (
        model_checksum(pt) == model_checksum(folder) != model_checksum(other_codec().save_pretrained(tmp_path / "o.pt"))
    )


def test_codes_of_a_file_decode_with_the_same_weights_as_a_folder(tmp_path, model):
    folder = Codec.from_pretrained(model).save_pretrained(tmp_path / "model_dir")
    sf.write(tmp_path / "a.wav", synth_utterance(0.3, seed=1), SR)
    assert main(["encode", "--model", str(model), str(tmp_path / "a.wav"), "-o", str(tmp_path / "a.vqc")]) == 0
    assert (
        main(["decode", "--model", str(folder), str(tmp_path / "a.vqc"), "-o", str(tmp_path / "b.wav")]) == 0
    )  # row 17


def test_resynth_refuses_another_models_units(tmp_path, model, capsys):
    data = make_data_dir(tmp_path, n=2)
    assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "u")]) == 0
    other = other_codec().save_pretrained(tmp_path / "other.pt")
    capsys.readouterr()
    argv = ["resynth", "--model", str(other), "--units", str(tmp_path / "u"), "--out", str(tmp_path / "r")]
    assert main(argv) == 2  # row 129
    assert "another model" in one_error_line(capsys) and not (tmp_path / "r").exists()
    assert main([*argv, "--any-model"]) == 0
    assert main(["resynth", "--model", str(model), "--units", str(tmp_path / "u"), "--out", str(tmp_path / "s")]) == 0


def test_the_prior_commands_compare_the_unit_model(tmp_path, model, capsys):
    prior = WaveNetPrior(WaveNetConfig(64, 2, 8, 8, 2, 2, unit_model="0" * 64)).save_pretrained(tmp_path / "p.pt")
    argv = ["sample", "--prior", str(prior), "--codec", str(model), "--num", "1", "--seconds", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "s")]) == 2
    assert "another model" in one_error_line(capsys)
    assert main([*argv, "--out", str(tmp_path / "s"), "--any-model"]) == 0
    data = make_data_dir(tmp_path, n=2)
    for name in ("train", "valid"):
        assert main(["extract-units", "--model", str(model), "--data", str(data), "--out", str(tmp_path / name)]) == 0
    info = read_info(tmp_path / "valid")
    info.model_checksum = "1" * 64
    write_info(tmp_path / "valid", info)
    capsys.readouterr()
    args = ["train-prior", "--train-units", str(tmp_path / "train"), "--valid-units", str(tmp_path / "valid")]
    assert main([*args, "--exp-dir", str(tmp_path / "exp")]) == 2
    assert "another model" in one_error_line(capsys)


# --- F5: files others can read ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_model_folders_and_outputs_follow_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        folder = small_codec().save_pretrained(tmp_path / "m")
        single = small_codec().save_pretrained(tmp_path / "m.pt")
        codes = write_codes_file(
            tmp_path / "a.vqc", np.zeros((1, 3), dtype=np.int64), CodesHeader("x", 16000, 960, 1, 64, 50.0)
        )
    finally:
        os.umask(old)
    for path in (folder / "model.safetensors", folder / "config.json", single, codes):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path  # row 67: safetensors wrote 0600


# --- item 5: no silent overwrite of a model --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["m.pt", "m_dir"])
def test_save_pretrained_refuses_an_existing_model_unless_told(tmp_path, name):
    path = small_codec().save_pretrained(tmp_path / name)
    before = model_checksum(path)
    with pytest.raises(UserError, match="a model is already there"):
        other_codec().save_pretrained(path)
    assert model_checksum(path) == before
    other_codec().save_pretrained(path, overwrite=True)
    assert model_checksum(path) != before


def test_save_pretrained_onto_a_folder_named_pt_is_one_line(tmp_path):
    (tmp_path / "x.pt").mkdir()
    with pytest.raises(UserError, match="is a folder"):  # row 68: IsADirectoryError
        small_codec().save_pretrained(tmp_path / "x.pt")


# --- F7 / F12: evaluate-units refuses what it cannot score -----------------------------------------------------


def _edit_ctm(ctm: pathlib.Path, how: str) -> pathlib.Path:
    lines = ctm.read_text().splitlines()
    if how == "twice":
        lines = lines + lines
    elif how == "overlap":
        parts = lines[5].split()
        parts[3] = f"{float(parts[3]) + 0.1:.2f}"
        lines[5] = " ".join(parts)
    elif how == "silence":
        lines = [" ".join([*line.split()[:4], "SIL"]) for line in lines]
    out = ctm.with_name(f"{how}.ctm")
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.parametrize(
    "how, message",
    [
        ("twice", r"twice.ctm:\d+: segment of .* repeats line \d+"),  # row 114
        ("overlap", r"overlap.ctm:\d+: segment of .* overlaps line \d+"),  # row 115
        ("silence", "every phone .* is silence"),  # row 119
    ],
)
def test_alignments_that_cannot_be_scored_are_refused(tmp_path, how, message):
    units, ctm = _synthetic_units(tmp_path)
    with pytest.raises(UserError, match=message):
        evaluate_units(units, _edit_ctm(ctm, how), tmp_path / "q")


def test_a_nist_ctm_with_confidences_scores_as_the_plain_one(tmp_path):
    units, ctm = _synthetic_units(tmp_path)
    six = tmp_path / "six.ctm"
    six.write_text("".join(line + " 0.93\n" for line in ctm.read_text().splitlines()))  # row 118
    plain, nist = evaluate_units(units, ctm, tmp_path / "a"), evaluate_units(units, six, tmp_path / "b")
    assert {k: v for k, v in plain.items() if k not in ("seconds", "alignments")} == {
        k: v for k, v in nist.items() if k not in ("seconds", "alignments")
    }


def test_one_speaker_writes_valid_json_with_a_reason(tmp_path):
    units, ctm = _synthetic_units(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    utts = [line.split()[0] for line in (units / "units").read_text().splitlines()]
    (data / "utt2spk").write_text("".join(f"{u} onlyone\n" for u in utts))
    evaluate_units(units, ctm, tmp_path / "q", data_dir=data)
    text = (tmp_path / "q" / "unit_quality.json").read_text()
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in unit_quality.json"))  # row 120
    assert summary["abx_across"] is None and "one speaker" in summary["undefined"]["abx_across"]
    assert "n/a" in (tmp_path / "q" / "RESULTS.md").read_text()


def test_a_non_utf8_ctm_and_a_data_dir_without_utt2spk_are_one_line(tmp_path, capsys):
    units, ctm = _synthetic_units(tmp_path)
    latin = tmp_path / "latin.ctm"
    latin.write_bytes(ctm.read_bytes() + b"1001-1-0000 1 9.00 0.10 caf\xe9\n")
    args = ["evaluate-units", "--units", str(units), "--out", str(tmp_path / "q")]
    assert main([*args, "--alignments", str(latin)]) == 2  # row 122
    assert "not UTF-8" in one_error_line(capsys)
    (tmp_path / "data").mkdir()
    assert main([*args, "--alignments", str(ctm), "--data", str(tmp_path / "data")]) == 2  # row 125
    assert "utt2spk" in one_error_line(capsys)


# --- F8: non-finite weights ------------------------------------------------------------------------------------


def test_nan_decoder_weights_are_refused_at_load(tmp_path, model, capsys):
    folder = Codec.from_pretrained(model).save_pretrained(tmp_path / "nan")
    state = load_file(folder / "model.safetensors")
    key = next(k for k in state if k.startswith("decoder.") and k.endswith("bias"))
    state[key][0] = float("nan")
    save_file(state, folder / "model.safetensors", metadata={"format": "vqaudio-codec"})
    with pytest.raises(UserError, match=f"{key}.* NaN/Inf"):
        Codec.from_pretrained(folder)


def test_a_decoder_that_gives_nan_is_an_error_not_a_wav(tmp_path):
    codec = small_codec()
    with torch.no_grad():
        biases = [p for name, p in codec.decoder.named_parameters() if name.endswith("bias")]
        biases[-1].fill_(float("nan"))  # the last layer's bias; row 59: decoded to a constant -1.0
    with pytest.raises(UserError, match="NaN/Inf sample"):
        codec.decode_utterance(torch.zeros(2, 3, dtype=torch.long))


# --- F9: ONNX --------------------------------------------------------------------------------------------------


def test_onnx_export_checks_every_package_first(tmp_path, monkeypatch):
    from vqaudio.export import export_onnx

    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    with pytest.raises(UserError, match="needs onnxscript"):  # row 91
        export_onnx(small_codec(), tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnxscript") is None,
    reason="needs the onnx extra",
)
@pytest.mark.parametrize("lstm", [0, 1])
def test_onnx_pads_a_partial_frame_refuses_negative_codes_and_honours_the_opset(tmp_path, capsys, lstm):
    import onnx
    import onnxruntime as ort

    model = small_codec(lstm=lstm).save_pretrained(tmp_path / "m.pt")
    out = tmp_path / "onnx"
    assert main(["export-onnx", "--model", str(model), "--out", str(out), "--opset", "5"]) == 2  # row 94
    assert "--opset 5" in one_error_line(capsys) and not out.exists()
    assert main(["export-onnx", "--model", str(model), "--out", str(out)]) == 0
    assert all(o.version == 18 for o in onnx.load(str(out / "encoder.onnx")).opset_import if o.domain == "")
    codec = Codec.from_pretrained(model)
    enc = ort.InferenceSession(str(out / "encoder.onnx"))
    for length in (5 * HOP + 100, 7 * HOP - 1, 3 * HOP + 1):  # row 97
        wav = torch.from_numpy(synth_utterance(length / SR, seed=length))[None, None].float()
        assert np.array_equal(enc.run(None, {"wav": wav.numpy()})[0], codec.encode(wav).numpy()), length
    dec = ort.InferenceSession(str(out / "decoder.onnx"))
    codes = np.zeros((1, 2, 4), dtype=np.int64)
    codes[0, 0, 1] = -1
    with pytest.raises(Exception, match="index|indices"):  # row 102: decoded as the last codeword
        dec.run(None, {"codes": codes})
    capsys.readouterr()
    assert main(["export-onnx", "--model", str(model), "--out", str(out)]) == 2
    assert "exists" in one_error_line(capsys)
    (tmp_path / "file").write_text("")
    assert main(["export-onnx", "--model", str(model), "--out", str(tmp_path / "file")]) == 2  # row 93
    assert "not a directory" in one_error_line(capsys)


# --- F10: damaged model folders and configs --------------------------------------------------------------------


def _damage(folder: pathlib.Path, how: str) -> None:
    meta = json.loads((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    key = sorted(state)[3]
    if how == "missing":
        del state[key]
    elif how == "extra":
        state["decoder.extra.weight"] = torch.zeros(3)
    elif how == "shape":
        state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    elif how == "n_q":
        meta["config"]["quantizer"]["n_q"] = 3
    elif how == "K":
        meta["config"]["quantizer"]["codebook_size"] = 128
    elif how in ("sample_rate", "channels"):
        meta["config"][how] = 0
    elif how == "huge":
        meta["config"]["encoder_channels"] = 10**6
    elif how == "version":
        meta["version"] = "3"
    save_file(state, folder / "model.safetensors", metadata={"format": "vqaudio-codec"})
    (folder / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing", r"weight '.*' \(shape .*\) is missing"),  # row 57
        ("extra", r"weight 'decoder.extra.weight' \(shape \(3,\)\) in the file is not part"),
        ("shape", r"weight '.*': the file holds shape .*, the config builds"),
        ("n_q", r"weight 'quantizer.stages.2.* is missing"),  # row 56
        ("K", r"the file holds shape \(64,.*\), the config builds \(128,"),
        ("sample_rate", r"sample_rate: 0 is out of range"),  # row 51
        ("channels", r"channels: 0 is out of range"),
        ("huge", r"GiB.*check channels"),
        ("version", r"format version '3' is not an integer"),  # row 54
    ],
)
def test_a_damaged_model_folder_is_one_line(tmp_path, how, message):
    folder = small_codec().save_pretrained(tmp_path / "m")
    _damage(folder, how)
    with pytest.raises(UserError, match=message):
        Codec.from_pretrained(folder)


@pytest.mark.parametrize(
    "name, write, message",
    [
        ("a.npy", lambda p: np.savez(open(p, "wb"), codes=np.zeros((2, 3), dtype=np.int64)), "npz archive"),
        ("a.txt", lambda p: p.write_text("1 2 " + "9" * 23 + "\n"), "too large"),
        ("b.txt", lambda p: p.write_bytes(b"1 2 \xff\n"), "not UTF-8"),
    ],
)
def test_bad_codes_files_are_one_line(tmp_path, model, capsys, name, write, message):
    write(tmp_path / name)
    assert main(["decode", "--model", str(model), str(tmp_path / name), "-o", str(tmp_path / "x.wav")]) == 2
    assert message in one_error_line(capsys)


def test_extract_units_npy_decodes_as_the_units(tmp_path, model):
    data = make_data_dir(tmp_path, n=1)
    out = tmp_path / "u"
    argv = ["extract-units", "--model", str(model), "--data", str(data), "--out", str(out), "--format", "kaldi,npy"]
    assert main(argv) == 0
    npy = next((out / "npy").iterdir())
    assert main(["decode", "--model", str(model), str(npy), "-o", str(tmp_path / "a.wav")]) == 0  # row F12
    units = np.load(npy).T  # (n_q, T)
    expected = Codec.from_pretrained(model).decode_utterance(torch.from_numpy(units.astype(np.int64))).numpy()
    assert np.abs(sf.read(tmp_path / "a.wav", dtype="float32")[0] - expected).max() < 1e-4


# --- F10: the Python API's audio dtypes and stream states --------------------------------------------------------


def test_float64_audio_is_converted_explicitly():
    codec = small_codec()
    wav = torch.from_numpy(synth_utterance(0.3, seed=1))[None, None]  # row 77: sf.read's float64
    assert torch.equal(codec.encode(wav.double()), codec.encode(wav.float()))


def test_stream_state_mismatches_name_both_batches():
    codec = Codec(
        CodecConfig(
            encoder="seanet", channels=4, encoder_channels=4, latent_dim=16, max_channels=32, causal=True, lstm=1
        )
    )
    state = codec.init_stream(batch=1)
    with pytest.raises(ValueError, match="stream state is for batch 1, the chunk has batch 2"):  # row 80
        codec.encode_step(torch.zeros(2, 1, HOP), state)
    state2 = codec.init_stream(batch=2)
    with pytest.raises(ValueError, match="stream state is for batch 2, the codes has batch 1"):
        codec.decode_step(torch.zeros(1, 1, 2, dtype=torch.long), state2)
    with pytest.raises(ValueError, match="at least one frame"):  # row 76
        codec.decode_step(torch.zeros(1, 1, 0, dtype=torch.long), state)


# --- item 10: the fast path follows the module tree ------------------------------------------------------------


class Wrapper(torch.nn.Module):
    """What a LoRA/PEFT wrapper does to a layer: the same computation behind a module of another type."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def test_a_layer_swapped_in_after_construction_falls_back_to_the_layers(caplog):
    codec = small_codec(decoder="seanet")  # the SEANet stacks' time-major path
    wav = torch.from_numpy(synth_utterance(0.5, seed=1))[None, None].float()
    codes, out = codec.encode(wav), codec.decode(codec.encode(wav))
    codec.encoder.net[2] = Wrapper(codec.encoder.net[2])
    codec.decoder.net[0].conv = Wrapper(codec.decoder.net[0].conv)  # a wrapped conv inside a layer
    with caplog.at_level("INFO", logger="vqaudio.models.seanet"):
        assert torch.equal(codec.encode(wav), codes)  # crashed: no attribute 'time_major'
        codec.encode(wav)
    assert sum("runs layer by layer" in r.message for r in caplog.records) == 1  # logged once
    assert not codec.encoder.fast_path
    codec.decoder.net[0].conv = codec.decoder.net[0].conv.inner
    hook = codec.decoder.net[-1].register_forward_hook(lambda m, i, o: o * 0)
    assert not codec.decoder.fast_path and torch.equal(codec.decode(codes), torch.zeros_like(out))
    hook.remove()
    assert codec.decoder.fast_path and torch.allclose(codec.decode(codes), out)


def test_the_streaming_example_says_in_one_line_that_a_file_is_empty(tmp_path):
    import subprocess
    import sys

    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    run = subprocess.run(
        [sys.executable, str(root / "egs" / "stream.py"), "--input", str(tmp_path / "empty.wav")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and "empty.wav" in run.stderr
