"""Scores from pretrained outside models (vqaudio.scoring): pocketsphinx WER/CER, Resemblyzer speaker similarity,
pYIN gross pitch and voicing decision errors, and ``vqaudio evaluate --asr --speaker-sim --f0``, on real speech
from ../shared/data/speech-mini (generated speech where only the arithmetic is checked)."""

from __future__ import annotations

import csv
import json
import math
import sys

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.scoring import (
    EditCounts,
    PitchErrors,
    Recognizer,
    SpeakerEncoder,
    char_errors,
    conversion_similarity,
    cosine,
    f0_track,
    normalize_text,
    pitch_errors,
    word_errors,
)

from .speech import SHARED, SR, synth_utterance

REAL = SHARED / "LibriSpeech" / "test-other"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="needs the real speech of ../shared/data/speech-mini")


@pytest.fixture(autouse=True)
def _one_thread():
    # The GE2E LSTM on a few 1.6 s windows: with the CPUs shared, two OpenMP threads made one utterance take
    # seconds instead of milliseconds (measured here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def real(utt: str) -> tuple[np.ndarray, str]:
    """The audio and reference text of a LibriSpeech test-other utterance of speech-mini."""
    spk, ch, _ = utt.split("-")
    folder = REAL / spk / ch
    text = dict(line.split(" ", 1) for line in (folder / f"{spk}-{ch}.trans.txt").read_text().splitlines())
    return sf.read(folder / f"{utt}.flac", dtype="float32")[0], text[utt]


def noisy(wav: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(wav.size).astype(np.float32)
    noise *= np.sqrt(np.mean(wav**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return (wav + noise).astype(np.float32)


@pytest.fixture(scope="module")
def encoder():
    pytest.importorskip("resemblyzer")
    torch.set_num_threads(1)
    return SpeakerEncoder()


def test_error_rate_arithmetic():
    assert normalize_text("Don't -- stop, (please)!") == "DON'T STOP PLEASE"
    deletion = word_errors("the cat sat on the mat", "the cat sat on mat")
    assert (deletion.substitutions, deletion.deletions, deletion.insertions, deletion.ref_len) == (0, 1, 0, 6)
    mixed = word_errors("a b c", "a x c d")
    assert (mixed.substitutions, mixed.deletions, mixed.insertions) == (1, 0, 1) and mixed.rate == pytest.approx(2 / 3)
    assert word_errors("Don't stop.", "DON'T STOP").errors == 0
    assert word_errors("one two three", "").rate == 1.0 and math.isnan(word_errors("", "words").rate)
    assert char_errors("ABC", "ABD").rate == pytest.approx(1 / 3)
    assert char_errors("AB CD", "ABCD") == EditCounts(0, 1, 0, 5)  # the space between words counts
    # corpus WER is total errors over total reference words, not the mean of the utterances' rates
    short, long = (
        word_errors("yes no", "yes"),
        word_errors("one two three four five six seven eight", "one two three four five six seven eight"),
    )
    assert (short + long).rate == pytest.approx(1 / 10) and np.mean([short.rate, long.rate]) == pytest.approx(0.25)


@needs_real
def test_wer_of_original_speech_is_below_reversed():
    pytest.importorskip("pocketsphinx")
    rec = Recognizer()
    wav, text = real("1688-142285-0009")
    heard = rec.transcribe(wav)
    original = word_errors(text, heard)
    reversed_ = word_errors(text, rec.transcribe(wav[::-1].copy()))
    print(f"WER original {original.rate:.2f}, reversed {reversed_.rate:.2f}")
    assert original.rate <= 0.5 and reversed_.rate > original.rate + 0.4
    assert char_errors(text, heard).rate < 0.3


@needs_real
def test_speaker_similarity_same_speaker_above_different(encoder):
    a1, a2, b1, b2 = (
        encoder.embed(real(u)[0], name=u)
        for u in ("1688-142285-0002", "1688-142285-0009", "2414-128291-0006", "2414-128291-0000")
    )
    same = [cosine(a1, a2), cosine(b1, b2)]
    different = [cosine(a1, b1), cosine(a1, b2), cosine(a2, b1), cosine(a2, b2)]
    print(f"SECS same speaker {np.round(same, 3)}, different {np.round(different, 3)}")
    assert min(same) > max(different) + 0.1
    assert a1.shape == (256,) and np.linalg.norm(a1) == pytest.approx(1.0, abs=1e-5)
    # conversion scoring: speech of speaker 1688 "converted" to 1688's voice from source speaker 2414
    target = encoder.embed_speaker([real("1688-142285-0008")[0], real("1688-142285-0005")[0]])
    scores = conversion_similarity(encoder, real("1688-142285-0002")[0], target, source=b1)
    assert scores["speaker_similarity_target"] > scores["speaker_similarity_source"] + 0.1
    assert set(conversion_similarity(encoder, real("2414-128291-0006")[0], target)) == {"speaker_similarity_target"}


def test_speaker_encoder_refuses_silence_and_short_speech(encoder):
    with pytest.raises(UserError, match="silent"):
        encoder.embed(np.zeros(3 * SR, dtype=np.float32), name="quiet.wav")
    wav = real("1688-142285-0002")[0] if REAL.is_dir() else synth_utterance(3.0, seed=1)
    with pytest.raises(UserError, match=r"short\.wav: .* s of speech .* at least 1\.0 s"):
        encoder.embed(wav[: SR // 2], name="short.wav")


def test_pitch_errors_zero_for_identical_audio_high_for_shifted_and_noise():
    wav = real("1688-142285-0009")[0][: int(2.5 * SR)] if REAL.is_dir() else synth_utterance(2.5, seed=4)
    ref = f0_track(wav)
    assert ref[1].mean() > 0.3  # speech is mostly voiced
    same = pitch_errors(ref, f0_track(wav.copy()))
    assert same.gross_pitch_error == 0.0 and same.voicing_decision_error == 0.0
    shifted = pitch_errors(ref, f0_track(librosa.effects.pitch_shift(wav, sr=SR, n_steps=5)))
    noise = pitch_errors(ref, f0_track(np.random.default_rng(0).uniform(-0.3, 0.3, wav.size).astype(np.float32)))
    print(
        f"GPE/VDE pitch +5 semitones {shifted.gross_pitch_error:.2f}/{shifted.voicing_decision_error:.2f}, "
        f"noise VDE {noise.voicing_decision_error:.2f}"
    )
    assert shifted.gross_pitch_error > 0.7
    assert noise.voicing_decision_error > 0.3
    # no voiced frame (silence): all unvoiced, GPE undefined, VDE = the reference's voiced share
    silent = f0_track(np.zeros(wav.size, dtype=np.float32))
    assert not silent[1].any()
    none = pitch_errors(ref, silent)
    assert math.isnan(none.gross_pitch_error) and none.voicing_decision_error == pytest.approx(ref[1].mean(), abs=0.01)
    assert (same + none) == PitchErrors(0, same.both_voiced, none.voicing_errors, same.frames + none.frames)


@pytest.mark.parametrize(
    "module, make", [("pocketsphinx", Recognizer), ("resemblyzer", SpeakerEncoder)], ids=["asr", "speaker"]
)
def test_missing_package_is_one_line(monkeypatch, module, make):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError) as err:
        make()
    message = str(err.value)
    assert "\n" not in message and module in message and "pip install 'vqaudio[eval]'" in message


def test_evaluate_without_package_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "resemblyzer", None)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text("a /nonexistent.wav\n")
    out = tmp_path / "eval"
    assert main(["evaluate", "--ref", str(data), "--hyp", str(data), "--out", str(out), "--speaker-sim"]) == 2
    assert not out.exists() and "pip install 'vqaudio[eval]'" in capsys.readouterr().err


def test_evaluate_asr_speaker_sim_f0_end_to_end(tmp_path):
    pytest.importorskip("pocketsphinx")
    pytest.importorskip("resemblyzer")
    utts = ["1688-142285-0002", "1688-142285-0009", "2414-128291-0006"]  # speaker 2414 has one utterance
    data, hyp = tmp_path / "data", tmp_path / "hyp"
    data.mkdir()
    hyp.mkdir()
    scp, hyp_scp, text = [], [], []
    for i, utt in enumerate(utts):
        wav, words = real(utt) if REAL.is_dir() else (synth_utterance(3.0, seed=i), "HELLO WORLD")
        sf.write(data / f"{utt}.flac", wav, SR)
        # the first hypothesis is the original itself, the others carry noise at 10 dB SNR
        sf.write(hyp / f"{utt}.wav", wav if i == 0 else noisy(wav, snr_db=10, seed=i), SR)
        scp.append(f"{utt} {data / f'{utt}.flac'}")
        hyp_scp.append(f"{utt} {hyp / f'{utt}.wav'}")
        text.append(f"{utt} {words}")
    (data / "wav.scp").write_text("\n".join(scp) + "\n")
    (data / "text").write_text("\n".join(text) + "\n")
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    (hyp / "wav.scp").write_text("\n".join(hyp_scp) + "\n")
    out = tmp_path / "eval"
    args = ["evaluate", "--ref", str(data), "--hyp", str(hyp), "--out", str(out), "--asr", "--speaker-sim", "--f0"]
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = {r["utt"]: r for r in csv.DictReader((out / "per_utterance.csv").open())}
    print(
        {
            k: m[k]
            for k in (
                "wer",
                "wer_reference",
                "cer",
                "speaker_similarity",
                "gross_pitch_error",
                "voicing_decision_error",
            )
        }
    )
    from importlib.metadata import version

    assert m["scorers"] == {name: version(name) for name in ("pocketsphinx", "resemblyzer", "librosa")}
    assert f"pocketsphinx {version('pocketsphinx')} (en-US model)" in (out / "RESULTS.md").read_text()
    words = sum(int(r["ref_words"]) for r in rows.values())
    assert m["wer"] == pytest.approx(sum(int(r["word_errors"]) for r in rows.values()) / words)
    assert m["wer_reference"] == pytest.approx(sum(int(r["word_errors_reference"]) for r in rows.values()) / words)
    assert 0 <= m["cer"] <= m["wer"] + 1 and m["asr_utterances"] == 3 and m["asr_reference_words"] == words
    first = rows[utts[0]]
    assert first["asr_text"] == first["asr_text_reference"] and first["wer"] == first["wer_reference"]
    assert float(first["gross_pitch_error"]) == 0.0 and float(first["voicing_decision_error"]) == 0.0
    assert float(first["speaker_similarity"]) == pytest.approx(float(first["speaker_similarity_reference"]), abs=1e-6)
    assert math.isnan(float(rows[utts[2]]["speaker_similarity_reference"]))
    assert math.isnan(float(rows[utts[2]]["speaker_similarity"]))  # only its own reference to compare with: left out
    assert m["speaker_similarity_self_reference"] == 1 and m["speaker_similarity_unscored"] == 1
    assert m["utterances"]["speaker_similarity"] == 2 and m["utterances"]["wer"] == 3
    assert 0 < m["speaker_similarity"] <= 1 and 0 <= m["gross_pitch_error"] <= 1
    assert 0 <= m["voicing_decision_error"] <= 1
    if REAL.is_dir():
        assert float(first["speaker_similarity"]) > 0.75 and m["wer_reference"] < 0.7
    results = (out / "RESULTS.md").read_text()
    for label in ("word error rate, pocketsphinx", "speaker similarity, GE2E", "gross pitch error", "voicing decision"):
        assert label in results
    assert "than the one compared or copied: 1" in results


def test_evaluate_silent_hypothesis_loses_no_other_utterance(tmp_path, caplog):
    pytest.importorskip("resemblyzer")
    utts = ["1688-142285-0002", "1688-142285-0009"]
    data, hyp = tmp_path / "data", tmp_path / "hyp"
    data.mkdir()
    hyp.mkdir()
    for i, utt in enumerate(utts):
        wav = real(utt)[0] if REAL.is_dir() else synth_utterance(3.0, seed=i)
        sf.write(data / f"{utt}.flac", wav, SR)
        sf.write(hyp / f"{utt}.wav", wav if i == 0 else np.zeros_like(wav), SR)
    (data / "wav.scp").write_text("".join(f"{u} {data / f'{u}.flac'}\n" for u in utts))
    (hyp / "wav.scp").write_text("".join(f"{u} {hyp / f'{u}.wav'}\n" for u in utts))
    out = tmp_path / "eval"
    assert main(["evaluate", "--ref", str(data), "--hyp", str(hyp), "--out", str(out), "--speaker-sim", "--f0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = {r["utt"]: r for r in csv.DictReader((out / "per_utterance.csv").open())}
    assert m["num_utterances"] == 2 and m["speaker_similarity_unscored"] == 1
    assert m["speaker_similarity"] == pytest.approx(float(rows[utts[0]]["speaker_similarity"]))
    assert math.isnan(float(rows[utts[1]]["speaker_similarity"])) and "silent" in caplog.text
    assert (
        math.isnan(float(rows[utts[1]]["gross_pitch_error"])) and float(rows[utts[1]]["voicing_decision_error"]) > 0.3
    )
    assert "hypotheses without a speaker similarity (see the log): 1" in (out / "RESULTS.md").read_text()
