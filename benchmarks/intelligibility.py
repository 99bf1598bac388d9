"""Intelligibility and quality of resynthesized speech on held-out speakers: trained codecs at chosen depths
beside the classical codecs Codec2 and Opus, every row scored by the same ``vqaudio evaluate --asr
--speaker-sim`` (pocketsphinx WER, GE2E speaker similarity, log-mel, STOI, PESQ-WB).

    pip install -e '.[eval,dsp]'
    python benchmarks/intelligibility.py --work /tmp/vqaudio_intel \\
        --systems original codec2:3200 codec2:1200 codec2:700C opus:6000 \\
        istft=/tmp/q29/istft/model.pt@1,2,8 seanet=/tmp/q29/ours/model.pt@1,2,8

Systems:
- ``original``: the references themselves (the WER ceiling of the recogniser on this set);
- ``codec2:MODE``: Codec2 (``pycodec2``, libcodec2) at MODE bit/s (3200, 2400, 1600, 1400, 1300, 1200, 700C),
  8 kHz: each utterance resampled to 8 kHz, coded frame by frame, decoded and resampled back;
- ``opus:BITRATE``: Opus (``opuslib_next``) at 16 kHz, VOIP, 20 ms frames, at BITRATE bit/s (VBR, the
  measured mean is reported), its lookahead removed so the output is aligned;
- ``NAME=MODEL@NQ[,NQ...]``: a vqaudio codec (model folder or ``model.pt``) at each residual depth NQ,
  ``Codec.encode`` / ``decode`` of each whole utterance;
- ``audio:NAME=DIR[@BITS]``: audio coded elsewhere, a folder with a ``wav.scp`` of the test set's utterance ids
  (``quality.py`` writes one per row and depth under ``WORK/<row>/audio/nq<Q>``), at BITS bit/s if given.

Test set: the held-out speakers of ``benchmarks/speech_mini.py`` (``WORK/data/test``, 55 utterances, 7 min),
or ``--data DIR``. Each row's audio and scores live in ``WORK/<row>/``; a row with ``result.json`` is not
redone, so a killed run continues; ``WORK/RESULTS.md`` holds the table of every row done.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
from speech_mini import ROOT, SHARED, prepare_data

CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200", "700C")
SCORES = ("wer", "cer", "stoi", "pesq_wb", "log_mel_distance", "speaker_similarity")


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    import librosa

    return librosa.resample(x, orig_sr=sr_in, target_sr=sr_out, res_type="soxr_hq").astype(np.float32)


def to_int16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1, 1) * 32767).round().astype(np.int16)


def codec2_coder(mode: str):
    """``wav (16 kHz float) -> (wav, bits)`` through Codec2 at ``mode``."""
    import pycodec2

    def run(wav: np.ndarray) -> tuple[np.ndarray, int]:
        c2 = pycodec2.Codec2(700 if mode == "700C" else int(mode))
        n = c2.samples_per_frame()
        pcm = to_int16(resample(wav, 16000, 8000))
        pcm = np.pad(pcm, (0, -len(pcm) % n))
        out, bits = [], 0
        for i in range(0, len(pcm), n):
            packed = c2.encode(pcm[i : i + n])
            bits += c2.bits_per_frame()
            out.append(c2.decode(packed))
        y = np.concatenate(out).astype(np.float32) / 32768
        return resample(y, 8000, 16000)[: len(wav)], bits

    return run


def opus_coder(bitrate: int):
    """``wav (16 kHz float) -> (wav, bits)`` through Opus (VOIP, 20 ms frames) at ``bitrate``, delay removed."""
    import opuslib_next

    def run(wav: np.ndarray) -> tuple[np.ndarray, int]:
        enc = opuslib_next.Encoder(16000, 1, opuslib_next.APPLICATION_VOIP)
        enc.bitrate = bitrate
        dec = opuslib_next.Decoder(16000, 1)
        frame, delay = 320, enc.lookahead
        pcm = to_int16(np.pad(wav, (0, delay + (-(len(wav) + delay) % frame))))
        out, bits = [], 0
        for i in range(0, len(pcm), frame):
            packet = enc.encode(pcm[i : i + frame].tobytes(), frame)
            bits += 8 * len(packet)
            out.append(np.frombuffer(dec.decode(packet, frame), dtype=np.int16))
        y = np.concatenate(out).astype(np.float32) / 32768
        return y[delay : delay + len(wav)], bits

    return run


def codec_coder(model: str, n_q: int):
    """``wav -> (wav, bits)`` through a vqaudio codec at depth ``n_q``."""
    import torch

    from vqaudio.models import Codec

    codec = Codec.from_pretrained(model).eval()
    bits_per_frame = codec.quantizer.bits_per_frame * n_q / codec.n_q

    def run(wav: np.ndarray) -> tuple[np.ndarray, int]:
        x = torch.from_numpy(wav)[None, None]
        codes = codec.encode(x, n_q=n_q)
        y = codec.decode(codes, length=len(wav))[0, 0].clamp(-1, 1).numpy()
        return y, int(round(codes.shape[-1] * bits_per_frame))

    return run


def rows_of(spec: str) -> list[tuple[str, object]]:
    """The ``(row name, coder)`` of a system given on the command line: a function that makes the coder, ``None``
    for the references, or ``(folder, bit/s or None)`` for audio coded elsewhere."""
    if spec == "original":
        return [("original", None)]
    kind, _, arg = spec.partition(":")
    if kind == "audio":
        name, eq, rest = arg.partition("=")
        folder, at, bits = rest.partition("@")
        if not eq or not name.isidentifier() or (at and not bits.isdigit()):
            raise SystemExit(f"system {spec!r}: give audio:NAME=DIR or audio:NAME=DIR@BITS")
        if not (pathlib.Path(folder) / "wav.scp").is_file():
            raise SystemExit(f"system {spec!r}: {folder}/wav.scp not found")
        return [(name, (pathlib.Path(folder), int(bits) if at else None))]
    if kind == "codec2":
        if arg not in CODEC2_MODES:
            raise SystemExit(f"codec2 mode {arg!r}: choose from {', '.join(CODEC2_MODES)}")
        return [(f"codec2_{arg}", lambda: codec2_coder(arg))]
    if kind == "opus":
        if not arg.isdigit():
            raise SystemExit(f"opus bitrate {arg!r}: give bit/s, e.g. opus:6000")
        return [(f"opus_{arg}", lambda: opus_coder(int(arg)))]
    name, eq, rest = spec.partition("=")
    model, at, depths = rest.rpartition("@")
    if not eq or not at or not name.isidentifier():
        raise SystemExit(
            f"system {spec!r}: give original, codec2:MODE, opus:BITRATE, NAME=MODEL@NQ[,NQ...] or audio:NAME=DIR"
        )
    if not pathlib.Path(model).exists():
        raise SystemExit(f"system {spec!r}: {model} not found")
    return [(f"{name}_nq{q}", lambda q=int(q): codec_coder(model, q)) for q in depths.split(",")]


def code(row: str, make, data: pathlib.Path, out: pathlib.Path) -> dict:
    """Write ``out/wav/<utt>.wav`` and ``out/wav.scp`` for every utterance of ``data``; the mean bitrate."""
    from vqaudio.data import read_data_dir
    from vqaudio.data.audio import load_audio

    coder = make()
    (out / "wav").mkdir(parents=True, exist_ok=True)
    bits = seconds = 0.0
    lines = []
    t0 = time.perf_counter()
    for utt in read_data_dir(data):
        wav = load_audio(utt.source, 16000, utt.start, utt.end, name=utt.utt_id)
        y, b = coder(wav)
        path = out / "wav" / f"{utt.utt_id}.wav"
        sf.write(path, y, 16000, subtype="FLOAT")
        lines.append(f"{utt.utt_id} {path}\n")
        bits, seconds = bits + b, seconds + len(wav) / 16000
    (out / "wav.scp").write_text("".join(lines))
    print(f"{row}: coded {len(lines)} utterances in {time.perf_counter() - t0:.0f} s", flush=True)
    return {"bitrate": bits / seconds}


def evaluate(ref: pathlib.Path, hyp: pathlib.Path, out: pathlib.Path) -> dict:
    cmd = [sys.executable, "-m", "vqaudio.cli.main", "evaluate", "--ref", str(ref), "--hyp", str(hyp)]
    cmd += ["--asr", "--speaker-sim", "--out", str(out)]
    print("+ vqaudio " + " ".join(cmd[3:]), flush=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return json.loads((out / "metrics.json").read_text())


def cell(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    """A table cell: the value (times ``scale``), or "n/a" where the scorer gave none."""
    return "n/a" if value is None or not np.isfinite(value) else f"{scale * value:.{digits}f}"


def table(work: pathlib.Path, results: list[dict]) -> str:
    lines = [
        "| row | bit/s | WER % | CER % | STOI | PESQ-WB | log-mel | GE2E similarity | utterances (WER) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        m = r["metrics"]
        bitrate = "" if r["bitrate"] is None else f"{r['bitrate']:.0f}"
        cells = [
            *(cell(m.get(k), 100, 1) for k in ("wer", "cer")),
            *(cell(m.get(k)) for k in ("stoi", "pesq_wb", "log_mel_distance", "speaker_similarity")),
            str(m.get("asr_utterances", "")),
        ]
        lines.append(f"| {r['row']} | {bitrate} | " + " | ".join(cells) + " |")
    scorers = {name: v for r in results for name, v in r["metrics"].get("scorers", {}).items()}
    if scorers:  # the outside models behind WER and the GE2E similarity, with their versions
        lines += ["", "scored with " + ", ".join(f"{name} {v}" for name, v in sorted(scorers.items()))]
    text = "\n".join(lines) + "\n"
    (work / "RESULTS.md").write_text(text)
    return text


def summary(metrics: dict) -> dict:
    """The mean scores of an ``evaluate`` metrics.json (its ``mean`` block where it has one)."""
    means = metrics.get("mean", metrics)
    keep = {k: means[k] for k in SCORES if k in means}
    for key in ("asr_utterances", "wer_reference", "scorers"):
        if key in metrics:
            keep[key] = metrics[key]
        elif key in means:
            keep[key] = means[key]
    return keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", required=True, help="see above")
    parser.add_argument("--work", default="/tmp/vqaudio_intel", help="work dir (resumable)")
    parser.add_argument("--data", type=pathlib.Path, help="test data dir (default: the held-out speakers)")
    parser.add_argument("--corpus", type=pathlib.Path, default=SHARED, help="speech-mini (default ../shared/...)")
    args = parser.parse_args()
    work = pathlib.Path(args.work)
    rows = [row for spec in args.systems for row in rows_of(spec)]
    data = args.data
    if data is None:
        data = work / "data" / "test"
        if not (data / "wav.scp").is_file():
            prepare_data(work, args.corpus)
    results = []
    for row, make in rows:
        path = work / row / "result.json"
        if not path.is_file():
            if isinstance(make, tuple):  # audio coded elsewhere
                hyp, coded = make[0], {"bitrate": make[1]}
            else:
                hyp = data if make is None else work / row / "audio"
                coded = {"bitrate": None} if make is None else code(row, make, data, hyp)
            metrics = evaluate(data, hyp, work / row / "eval")
            result = {"row": row, **coded, "metrics": summary(metrics)}
            path.write_text(json.dumps(result, indent=2) + "\n")
        results.append(json.loads(path.read_text()))
        print(table(work, results), flush=True)


if __name__ == "__main__":
    main()
