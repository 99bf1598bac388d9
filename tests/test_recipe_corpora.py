"""recipes/ljspeech/run.sh (one speaker) and recipes/vctk/run.sh (many, unseen voices held out) end to end on
generated corpora in their own layouts (22.05 kHz and 48 kHz audio, so resampling is exercised)."""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest
import soundfile as sf

from vqaudio.data.kaldi import read_table, validate_data_dir
from vqaudio.units import read_levels

from .speech import synth_utterance
from .test_recipe import recipe_copy, run, short_configs


def make_ljspeech(root: pathlib.Path, n: int = 8) -> pathlib.Path:
    """LJSpeech-1.1 layout: wavs/LJ001-00NN.wav at 22.05 kHz and metadata.csv (id|text|normalized)."""

    from .speech import synth_utterance

    corpus = root / "LJSpeech-1.1"
    (corpus / "wavs").mkdir(parents=True)
    rows = []
    for i in range(1, n + 1):
        uid = f"LJ001-{i:04d}"
        wav = synth_utterance(1.0, seed=i, sr=22050)
        sf.write(corpus / "wavs" / f"{uid}.wav", np.asarray(wav), 22050)
        rows.append(f"{uid}|Printing, number {i}.|Printing, number {i}.")
    (corpus / "metadata.csv").write_text("\n".join(rows) + "\n")
    return corpus


def make_vctk(root: pathlib.Path, speakers: int = 4, utts: int = 2) -> pathlib.Path:
    """VCTK-Corpus-0.92 layout: wav48_silence_trimmed/pNNN/pNNN_00K_mic1.flac at 48 kHz and txt/pNNN/*.txt."""

    corpus = root / "VCTK-Corpus-0.92"
    for s in range(speakers):
        spk = f"p{225 + s}"
        (corpus / "wav48_silence_trimmed" / spk).mkdir(parents=True)
        (corpus / "txt" / spk).mkdir(parents=True)
        for u in range(1, utts + 1):
            uid = f"{spk}_{u:03d}"
            sf.write(
                corpus / "wav48_silence_trimmed" / spk / f"{uid}_mic1.flac",
                synth_utterance(0.8, seed=s * 10 + u, sr=48000),
                48000,
            )
            sf.write(
                corpus / "wav48_silence_trimmed" / spk / f"{uid}_mic2.flac",
                synth_utterance(0.8, seed=99, sr=48000),
                48000,
            )  # mic 2 is ignored
            (corpus / "txt" / spk / f"{uid}.txt").write_text(f"Please call Stella {u}.\n")
    return corpus


@pytest.mark.parametrize(
    "recipe, extra",
    [
        ("ljspeech", ["--num_dev", "2", "--num_test", "2"]),
        ("vctk", ["--num_dev_speakers", "1", "--num_test_speakers", "1"]),
    ],
)
def test_single_and_multi_speaker_recipes(tmp_path, recipe, extra):
    rdir, env = recipe_copy(tmp_path, recipe)
    corpus = make_ljspeech(tmp_path) if recipe == "ljspeech" else make_vctk(tmp_path)
    codec_conf, prior_conf = short_configs(rdir)
    args = [
        "--corpus_dir",
        str(corpus),
        "--codec_config",
        codec_conf,
        "--prior_config",
        prior_conf,
        "--tag",
        "t",
        "--num_samples",
        "1",
        "--sample_seconds",
        "1",
        *extra,
    ]
    done = run(rdir, env, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = rdir / "exp" / "t"
    speakers = {}
    for split in ("train", "dev", "test"):
        d = rdir / "data" / split
        assert validate_data_dir(d) > 0
        utt2spk = read_table(d / "utt2spk")
        assert all(u.startswith(s) for u, s in utt2spk.items())
        speakers[split] = set(utt2spk.values())
        units = read_levels(exp / "units" / split)
        for utt, path in read_table(d / "wav.scp").items():
            info = sf.info(path)
            expected = math.ceil(info.frames * 16000 / info.samplerate / 320)
            assert abs(len(units[utt][0]) - expected) <= 1, (utt, len(units[utt][0]), expected)
    if recipe == "vctk":  # dev and test voices are unseen in training
        assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
        assert not any("mic2" in p for p in read_table(rdir / "data" / "train" / "wav.scp").values())
    else:
        assert speakers["train"] == speakers["dev"] == {"LJ"}
    results = (exp / "RESULTS.md").read_text()
    assert results.count("| SI-SDR dB (higher) |") == 2  # dev and test
    assert (exp / "samples" / "sample_0000.wav").is_file()
    again = run(rdir, env, *args)
    assert again.returncode == 0 and "training" not in again.stdout
