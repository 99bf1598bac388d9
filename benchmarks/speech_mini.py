"""The benchmarks' split of ../shared/data/speech-mini into training and held-out speakers.

Held out (the test set, never trained on): the LibriSpeech test-other speakers 1688, 2033, 3080 and 533,
the VCTK speaker 9926 (p226) and the LibriVox reader 9905: 55 utterances, all with pocketsphinx phone
alignments. Everything else (253 utterances, 111 speakers) is training data; every 32nd training
utterance also forms ``dev``.

As a script it writes a small copy of the corpus in the same layout, for smoke runs of the benchmarks
(``--corpus OUT`` of quality.py, extract.py, extract_memory.py and unit_quality.py; benchmarks/gpu.sh's dry
run): the ``--train`` and ``--test`` shortest utterances of at least ``--min-seconds``, taken from each
speaker in turn, with their transcripts and phone alignments (only aligned utterances where the corpus
has alignments).

    python benchmarks/speech_mini.py OUT [--corpus ../shared/data/speech-mini] [--train 8] [--test 4]
"""

from __future__ import annotations

import argparse
import glob
import os
import pathlib
import shutil
import subprocess
import sys
from collections import defaultdict

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "speech-mini"
HELD_OUT = {"1688", "2033", "3080", "533", "9926", "9905"}
CTM = pathlib.Path("alignments") / "pocketsphinx" / "speech-mini.phones.ctm"  # phone alignments, in the corpus


def vqaudio(*args: str, cwd: pathlib.Path) -> None:
    """Run the ``vqaudio`` command line in ``cwd``, echoing the command."""
    cmd = [sys.executable, "-m", "vqaudio.cli.main", *args]
    print("+ vqaudio " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))


def utterances(corpus: pathlib.Path) -> list[tuple[str, str]]:
    """``(utt, path)`` of every FLAC file of ``corpus`` outside ``extra/``, sorted by path."""
    if not corpus.is_dir():
        raise SystemExit(f"{corpus} not found: the benchmarks need ../shared/data/speech-mini beside the repository")
    files = sorted(glob.glob(str(corpus / "**" / "*.flac"), recursive=True))
    return [(os.path.basename(f)[: -len(".flac")], f) for f in files if "/extra/" not in f]


def prepare_data(work: pathlib.Path, corpus: pathlib.Path = SHARED) -> None:
    """Write Kaldi data dirs ``work/data/{train,dev,test}`` (wav.scp, utt2spk, text, utt2dur) of ``corpus``."""
    from vqaudio.data.kaldi import fix_data_dir, write_utt2dur

    text = {}
    for t in glob.glob(str(corpus / "**" / "*.trans.txt"), recursive=True):
        for line in open(t, encoding="utf-8"):
            utt, _, words = line.strip().partition(" ")
            text[utt] = words
    sets: dict[str, list] = {"train": [], "test": []}
    for utt, f in utterances(corpus):
        sets["test" if utt.split("-")[0] in HELD_OUT else "train"].append((utt, f))
    sets["dev"] = sets["train"][::32]
    for name, rows in sets.items():
        d = work / "data" / name
        d.mkdir(parents=True, exist_ok=True)
        rows = sorted(rows, key=lambda r: r[0].encode())
        (d / "wav.scp").write_text("".join(f"{u} {f}\n" for u, f in rows))
        (d / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u, _ in rows))
        (d / "text").write_text("".join(f"{u} {text[u]}\n" for u, _ in rows if u in text))
        print(f"{d}: {fix_data_dir(d)} utterances, utt2dur for {write_utt2dur(d)}", flush=True)


def pick(rows: list[tuple[float, str, str]], count: int) -> list[tuple[str, str]]:
    """``count`` of ``(seconds, utt, path)`` rows, shortest first, one speaker after another."""
    by_speaker: dict[str, list] = defaultdict(list)
    for row in sorted(rows):
        by_speaker[row[1].split("-")[0]].append(row)
    queues = [by_speaker[s] for s in sorted(by_speaker)]
    chosen = []
    while len(chosen) < count and any(queues):
        for q in queues:
            if q and len(chosen) < count:
                chosen.append(q.pop(0)[1:])
    return chosen


def write_subset(corpus: pathlib.Path, out: pathlib.Path, train: int, test: int, min_seconds: float) -> int:
    """Copy ``train`` training and ``test`` held-out utterances of ``corpus`` (layout, transcripts and phone
    alignments kept; only aligned utterances where the corpus has alignments) into ``out``; returns how many
    were copied."""
    import soundfile as sf

    aligned = None
    if (corpus / CTM).is_file():
        aligned = {line.split(" ", 1)[0] for line in open(corpus / CTM, encoding="utf-8")}
    rows: dict[bool, list] = {True: [], False: []}
    for utt, f in utterances(corpus):
        if aligned is not None and utt not in aligned:
            continue
        seconds = sf.info(f).duration
        if seconds >= min_seconds:
            rows[utt.split("-")[0] in HELD_OUT].append((seconds, utt, f))
    chosen = pick(rows[False], train) + pick(rows[True], test)
    if len(chosen) < train + test:
        raise SystemExit(f"{corpus}: fewer than {train} training and {test} held-out utterances of {min_seconds:g} s")
    keep = {utt for utt, _ in chosen}
    for utt, f in chosen:
        rel = pathlib.Path(f).relative_to(corpus)
        (out / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, out / rel)
        trans = pathlib.Path(f).parent / f"{'-'.join(utt.split('-')[:2])}.trans.txt"
        if trans.is_file():
            lines = [line for line in open(trans, encoding="utf-8") if line.split(" ", 1)[0] in keep]
            (out / rel.parent / trans.name).write_text("".join(lines), encoding="utf-8")
    if (corpus / CTM).is_file():
        (out / CTM).parent.mkdir(parents=True, exist_ok=True)
        lines = [line for line in open(corpus / CTM, encoding="utf-8") if line.split(" ", 1)[0] in keep]
        (out / CTM).write_text("".join(lines), encoding="utf-8")
    return len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path, help="where the small corpus goes (must not exist)")
    parser.add_argument("--corpus", type=pathlib.Path, default=SHARED, help="speech-mini (default ../shared/...)")
    parser.add_argument("--train", type=int, default=8, help="training utterances")
    parser.add_argument("--test", type=int, default=4, help="held-out utterances")
    parser.add_argument("--min-seconds", type=float, default=1.5, help="shortest utterance taken")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    n = write_subset(args.corpus, args.out, args.train, args.test, args.min_seconds)
    print(f"{args.out}: {n} utterances of {args.corpus}")


if __name__ == "__main__":
    main()
