"""The benchmarks' split of ../shared/data/speech-mini into training and held-out speakers.

Held out (the test set, never trained on): the LibriSpeech test-other speakers 1688, 2033, 3080 and 533,
the VCTK speaker 9926 (p226) and the LibriVox reader 9905: 55 utterances, all with pocketsphinx phone
alignments. Everything else (253 utterances, 111 speakers) is training data; every 32nd training
utterance also forms ``dev``.
"""

from __future__ import annotations

import glob
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "speech-mini"
HELD_OUT = {"1688", "2033", "3080", "533", "9926", "9905"}


def vqaudio(*args: str, cwd: pathlib.Path) -> None:
    """Run the ``vqaudio`` command line in ``cwd``, echoing the command."""
    cmd = [sys.executable, "-m", "vqaudio.cli.main", *args]
    print("+ vqaudio " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def prepare_data(work: pathlib.Path, corpus: pathlib.Path = SHARED) -> None:
    """Write Kaldi data dirs ``work/data/{train,dev,test}`` (wav.scp, utt2spk, text, utt2dur) of ``corpus``."""
    if not corpus.is_dir():
        raise SystemExit(f"{corpus} not found: the benchmarks need ../shared/data/speech-mini beside the repository")
    text = {}
    for t in glob.glob(str(corpus / "**" / "*.trans.txt"), recursive=True):
        for line in open(t, encoding="utf-8"):
            utt, _, words = line.strip().partition(" ")
            text[utt] = words
    sets: dict[str, list] = {"train": [], "test": []}
    for f in sorted(glob.glob(str(corpus / "**" / "*.flac"), recursive=True)):
        if "/extra/" in f:
            continue
        utt = os.path.basename(f)[: -len(".flac")]
        sets["test" if utt.split("-")[0] in HELD_OUT else "train"].append((utt, f))
    sets["dev"] = sets["train"][::32]
    for name, rows in sets.items():
        d = work / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        rows = sorted(rows, key=lambda r: r[0].encode())
        (d / "wav.scp").write_text("".join(f"{u} {f}\n" for u, f in rows))
        (d / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u, _ in rows))
        (d / "text").write_text("".join(f"{u} {text[u]}\n" for u, _ in rows if u in text))
        vqaudio("data-dir", "fix", str(d), cwd=work)
        vqaudio("data-dir", "utt2dur", str(d), cwd=work)
