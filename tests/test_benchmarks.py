"""Every script in benchmarks/ at a tiny budget, through its real code paths, so none can rot unnoticed:
each must exit 0 and write what it promises (finite figures); no timing is asserted.

The corpus is a small copy of ../shared/data/speech-mini made by benchmarks/speech_mini.py (8 training and 4
held-out utterances with transcripts and phone alignments), or of a generated corpus in its layout when the
shared one is absent. benchmarks/gpu.sh runs as its CPU dry run, which runs train_speed.py, quantizers.py and
quality.py with the GPU run's options at tiny budgets. The dry run and unit_quality.py, the two longest, start
before the other tests and run beside them; every script runs on one thread.

Peers from packages outside the dev extras are left out where they are not installed, and only the rows that
need nothing extra run then: EnCodec and DAC (encodec, descript-audio-codec) in codec.py and quality.py, and
vector-quantize-pytorch in quantizers.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from .speech import SHARED, SR, synth_utterance

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
HELD_OUT = ("533", "9905")  # two of benchmarks/speech_mini.py's held-out speakers, for the generated corpus
COVERED = {  # script -> the test that runs it
    "codec.py": "test_codec",
    "extract.py": "test_extract",
    "extract_memory.py": "test_extract_memory",
    "extract_ssl.py": "test_extract_ssl",
    "intelligibility.py": "test_intelligibility",
    "prior.py": "test_prior",
    "quality.py": "test_gpu_dry_run",
    "quantizers.py": "test_gpu_dry_run",
    "speech_mini.py": "test_speech_mini_subset",
    "train_speed.py": "test_gpu_dry_run",
    "unit_quality.py": "test_unit_quality",
    "vocoder.py": "test_vocoder",
}
NUMBER = re.compile(r"-?(?:\d[\d,]*\.?\d*|nan|inf)")


def run(*args: str, timeout: float = 180) -> str:
    """Run ``python benchmarks/<script> args...`` in the repository; its stdout, after it exited 0."""
    cmd = [sys.executable, str(BENCH / args[0]), *args[1:]]
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-4000:]}"
    return proc.stdout


class Background:
    """A command started now, its output going to ``log``; :meth:`result` waits for it to exit 0."""

    def __init__(self, cmd: list[str], log: pathlib.Path, **env: str) -> None:
        self.cmd, self.log = cmd, log
        with open(log, "w") as f:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=dict(ENV, **env), stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )

    def result(self, timeout: float = 600) -> str:
        rc = self.proc.wait(timeout=timeout)
        out = self.log.read_text()
        assert rc == 0, f"{' '.join(self.cmd)}: exit {rc}\n{out[-4000:]}"
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(text)]


def finite(values: list[float], where: str) -> None:
    assert values and all(math.isfinite(v) for v in values), f"{where}: {values}"


def generated_corpus(root: pathlib.Path) -> pathlib.Path:
    """speech-mini's layout with synthetic speech: 4 training and 2 held-out speakers, transcripts, and a phone
    CTM (a made-up phone every 80 ms)."""
    phones, ctm = ["AA", "B", "SIL", "K", "IY", "S"], []
    speakers = [("train-clean-5", s) for s in ("100", "101", "102", "103")] + [("test-other", s) for s in HELD_OUT]
    for split, spk in speakers:
        d = root / "LibriSpeech" / split / spk / "1"
        d.mkdir(parents=True)
        lines = []
        for u in range(3 if split == "train-clean-5" else 2):
            utt = f"{spk}-1-{u:04d}"
            seconds = 2.0 + 0.3 * u
            sf.write(d / f"{utt}.flac", synth_utterance(seconds, seed=int(spk) * 10 + u), SR)
            lines.append(f"{utt} HELLO WORLD NUMBER {u}\n")
            frames = range(int(seconds / 0.08))
            ctm += [f"{utt} 1 {i * 0.08:.2f} 0.08 {phones[(i + u) % len(phones)]}\n" for i in frames]
        (d / f"{spk}-1.trans.txt").write_text("".join(lines))
    (root / "alignments" / "pocketsphinx").mkdir(parents=True)
    (root / "alignments" / "pocketsphinx" / "speech-mini.phones.ctm").write_text("".join(ctm))
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> pathlib.Path:
    """benchmarks/speech_mini.py's small copy of speech-mini (or of a generated corpus in its layout)."""
    tmp = tmp_path_factory.mktemp("bench_corpus")
    source = SHARED if (SHARED / "alignments").is_dir() else generated_corpus(tmp / "generated")
    out = tmp / "mini"
    run("speech_mini.py", str(out), "--corpus", str(source), "--train", "8", "--test", "4")
    return out


@pytest.fixture(scope="module", autouse=True)
def background(request, tmp_path_factory, corpus) -> dict[str, tuple[Background, pathlib.Path]]:
    """The two longest runs, unit_quality.py and gpu.sh's dry run, started before this file's other tests and
    running beside them (each on one thread), those of them whose tests are selected: {test: (run, folder)}."""
    selected = {item.name for item in request.session.items}
    tmp = tmp_path_factory.mktemp("bench_runs")
    runs = {}
    if "test_unit_quality" in selected:
        work = tmp / "unit_quality"
        cmd = [sys.executable, str(BENCH / "unit_quality.py"), "--steps", "2", "--rows", "km3_ctx_lstm"]
        cmd += ["--kmeans", "mfcc_ctx2", "--no-probe", "--corpus", str(corpus), "--work", str(work)]
        runs["test_unit_quality"] = Background(cmd, tmp / "unit_quality.log"), work
    if "test_gpu_dry_run" in selected:
        out = tmp / "gpu_out"
        env = dict(DRY_RUN="1", OUT=str(out), CORPUS=str(corpus), PYTHON=sys.executable)
        runs["test_gpu_dry_run"] = Background(["bash", "benchmarks/gpu.sh"], tmp / "gpu.log", **env), out
    yield runs
    for run_, _ in runs.values():
        run_.stop()


def test_every_script_is_covered():
    assert sorted(p.name for p in BENCH.glob("*.py")) == sorted(COVERED)
    assert all(name in globals() for name in COVERED.values())


def test_speech_mini_subset(corpus):
    """8 training and 4 held-out utterances (from at least two held-out speakers), with their own transcripts
    and phone alignments only."""
    spec = importlib.util.spec_from_file_location("speech_mini", BENCH / "speech_mini.py")
    speech_mini = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speech_mini)
    utts = sorted(f.stem for f in corpus.rglob("*.flac"))
    test = [u for u in utts if u.split("-")[0] in speech_mini.HELD_OUT]
    assert len(utts) == 12 and len(test) == 4 and len({u.split("-")[0] for u in test}) >= 2
    assert {line.split()[0] for line in (corpus / speech_mini.CTM).read_text().splitlines()} == set(utts)
    text = [line.split()[0] for t in corpus.rglob("*.trans.txt") for line in t.read_text().splitlines()]
    assert text and set(text) <= set(utts)


def test_codec():
    models = ["vqaudio", "onnx", "vqaudio_seanet", "onnx_istft"] + [
        m for m in ("encodec", "dac") if importlib.util.find_spec(m)
    ]
    out = run("codec.py", "--seconds", "0.5", "--threads", "1", "--repeats", "1", "--models", *models)
    rows = [line for line in out.splitlines() if re.search(r"\d\.\dM ", line)]
    assert len(rows) == len(models), out
    for row in rows:
        rtf = numbers(row)[-2:]
        finite(rtf, row)
        assert min(rtf) > 0, row


def test_prior():
    out = run("prior.py", "--steps", "4", "--naive-steps", "1", "--batch-sizes", "1")
    rows = [line for line in out.splitlines() if line.split()[:1] == ["1"]]
    assert len(rows) == 1, out
    finite(numbers(rows[0]), rows[0])


def test_extract(corpus, tmp_path):
    """This checkout against itself as the code to compare, every file listed twice: the same units, every stage
    timed, jobs merged."""
    import soundfile as sf

    root = pathlib.Path(__file__).resolve().parents[1]
    args = ["--corpus", str(corpus), "--compare", str(root), "--out", str(tmp_path), "--repeat", "2"]
    out = run("extract.py", *args, timeout=400)
    assert "| units identical to this checkout's (frames) | - | 100.0000% |" in out, out
    results = json.loads((tmp_path / "results.json").read_text())
    seconds = sum(sf.info(str(f)).duration for f in pathlib.Path(corpus).rglob("*.flac"))
    assert all(abs(r["audio_s"] - 2 * seconds) < 0.01 * seconds for r in results), (seconds, out)
    assert len(results) == 2 and all(r["two_jobs_h_per_h"] > 0 and r["bare_rtf"] > 0 for r in results), out
    assert all("read" in r["one_job_stages"] and "encode" in r["one_job_stages"] for r in results), out
    assert all(0 < r["encoder_gmacs"] < r["matmul_gmacs"] * 2 for r in results), out


def test_extract_memory(corpus):
    out = run("extract_memory.py", "--corpus", str(corpus), "--minutes", "0.05", "--files", "2", "--threads", "1")
    rows = [numbers(line) for line in out.splitlines() if re.match(r"\| \d", line)]
    assert [r[0] for r in rows] == [1, 2], out
    for r in rows:
        finite(r, out)
        assert r[2] > 0, out  # peak RSS


def test_extract_memory_over_corpus_lengths(corpus):
    out = run("extract_memory.py", "--corpus", str(corpus), "--repeats", "1", "2", "--threads", "1")
    rows = [numbers(line) for line in out.splitlines() if re.match(r"\| \d", line)]
    assert [r[0] for r in rows] == [1, 2], out
    assert rows[1][2] == 2 * rows[0][2] and rows[1][1] > 1.9 * rows[0][1], out  # utterances, hours
    for r in rows:
        finite(r, out)
        assert r[3] > 100 and r[4] > 100, out  # a torch process's RSS, extracting and merging


def test_extract_ssl(corpus):
    """A tiny HuBERT: the bare forward, extract-units as by default and in padded batches, whose units must agree
    on every frame."""
    pytest.importorskip("transformers")
    args = ["--corpus", str(corpus), "--tiny", "--minutes", "0.1", "--threads", "1", "--repeats", "1", "--k", "8"]
    out = run("extract_ssl.py", *args, "--kmeans-utts", "2")
    rows = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert [r.split(" | ")[1] for r in rows] == [
        "bare",
        "extract-units",
        "extract-units, whole call",
        "extract-units, padded batches",
    ], out
    for row in rows:
        finite(numbers(row.split(" | ", 2)[2]), row)
    assert "(100.00 %)" in out, out


def test_unit_quality(background):
    """One k-means baseline and one codec row trained on its units (the k-means content objective), through
    extraction, unit scoring, resynthesis at two depths and evaluation; without the 1000-step probe."""
    unit_quality, work = background["test_unit_quality"]
    out = unit_quality.result()
    results = json.loads((work / "results.json").read_text())
    assert len(results) == 2 and (work / "exp" / "km3_ctx_lstm" / "model.pt").is_file()
    for label, r in results.items():
        finite([r["pnmi"], r["phone_purity"], r["abx_phone_any_context"]], label)
        assert r["num_utterances"] == 4 and label in out
    codec = next(r for label, r in results.items() if label.startswith("codec"))
    finite([codec[k] for k in ("log_mel_q2", "stoi_q2", "log_mel_q1", "stoi_q1")], "resynthesis")


def test_gpu_dry_run(background):
    """Every step of benchmarks/gpu.sh exits 0 on the CPU and writes its figures."""
    dry_run, out = background["test_gpu_dry_run"]
    dry_run.result()
    summary = (out / "summary.txt").read_text()
    steps = re.findall(r"== (\w+): exit (\d+)", summary)
    assert steps == [
        ("cuda_tests", "0"),
        ("train_speed", "0"),
        ("quantizers", "0"),
        ("quality", "0"),
        ("extract", "0"),
        ("extract_ssl", "0"),
    ], summary
    extract = json.loads((out / "extract" / "results.json").read_text())
    assert extract[0]["bare_rtf"] > 0 and extract[0]["one_job_h_per_h"] > 0, extract
    assert "| 1 | extract-units |" in (out / "extract_ssl.log").read_text()
    assert "dry run" in (out / "machine.txt").read_text()
    rate = re.search(r"([\d.]+) codec steps/s", (out / "train_speed.log").read_text())
    assert rate and float(rate.group(1)) > 0
    have_vqp = importlib.util.find_spec("vector_quantize_pytorch") is not None
    rows = [line.split("|") for line in (out / "quantizers.log").read_text().splitlines() if line.startswith("tiny")]
    assert [r[0].split()[1] for r in rows] == ["vq", "ema", "fsq", "rvq8"]
    for r in rows:
        finite(numbers(r[1]) + (numbers(r[2]) if have_vqp else []), "|".join(r))
    table, depths = (out / "quality_RESULTS.md").read_text().split("\n\n")  # 1 and 4 kbps; every depth
    rows = [line for line in table.splitlines() if line.startswith("| vqaudio")]
    assert len(rows) == 2, table  # ours (iSTFT decoder), ours_seanet
    for row in rows:
        cells = [c.strip().rstrip("M") for c in row.strip("|").split("|")[1:]]
        finite([float(c) for c in cells], row)
    rows = [line for line in depths.splitlines() if line.startswith("| vqaudio")]
    assert len(rows) == 2 and "| unquantized |" in depths, depths
    for row in rows:  # log-mel / STOI / PESQ at n_q 1, 2, 4, 8 and unquantized, then the latent errors
        finite(numbers(row.split("|", 2)[2]), row)
    assert (out / "quality_curves.png").stat().st_size > 0


def test_intelligibility(corpus, tmp_path):
    """The references, Codec2, Opus and an untrained tiny codec at two depths through vqaudio evaluate --asr
    --speaker-sim on the 4 held-out utterances; a rerun redoes nothing."""
    from vqaudio.models.codec import Codec, CodecConfig

    torch.manual_seed(0)
    cfg = CodecConfig(
        encoder="seanet", channels=4, encoder_channels=4, latent_dim=8, max_channels=16, lstm=0, decoder="istft"
    )
    codec = Codec(cfg)
    codec.save_pretrained(tmp_path / "codec.pt")
    work = tmp_path / "work"
    args = ["intelligibility.py", "--corpus", str(corpus), "--work", str(work)]
    args += ["--systems", "original", "codec2:1200", "opus:6000", f"tiny={tmp_path / 'codec.pt'}@1,2"]
    out = run(*args, timeout=400)
    table = (work / "RESULTS.md").read_text()
    assert re.search(r"scored with pocketsphinx \S+, resemblyzer \S+", table), table
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == [
        "| original",
        "| codec2_1200",
        "| opus_6000",
        "| tiny_nq1",
        "| tiny_nq2",
    ]
    for row in rows:
        finite(numbers(row.split(" | ", 2)[2]), row)
    bitrates = [json.loads((work / r / "result.json").read_text())["bitrate"] for r in ("codec2_1200", "tiny_nq1")]
    level = codec.bitrate / codec.n_q  # one level's bits at 50 frames/s (a partial last frame adds a little)
    assert abs(bitrates[0] - 1200) < 30 and level <= bitrates[1] < 1.01 * level, bitrates
    original = json.loads((work / "original" / "result.json").read_text())["metrics"]
    assert original["stoi"] > 0.99 and original["asr_utterances"] == 4, original
    stamp = (work / "opus_6000" / "result.json").stat().st_mtime_ns
    assert "coded" not in run(*args) and (work / "opus_6000" / "result.json").stat().st_mtime_ns == stamp
    assert "| tiny_nq2 |" in out
    # audio coded elsewhere (a folder with a wav.scp) is scored as it is: the same audio, the same scores
    run(*args, f"audio:copy={work / 'tiny_nq1' / 'audio'}@500", timeout=200)
    copy, tiny = (json.loads((work / r / "result.json").read_text()) for r in ("copy", "tiny_nq1"))
    assert copy["bitrate"] == 500 and copy["metrics"] == tiny["metrics"]


def test_vocoder(corpus, tmp_path):
    """Five rows that cover every code path (the codec's decoder at two depths; vocoders trained for 3 s each on
    level 0 with a reference voice and F0, on k-means units, and with GE2E embeddings) on an untrained tiny codec,
    with the conversion matrix and the targets, then a rerun that skips every row, --report, and a run with
    other settings, refused."""
    import yaml

    from vqaudio.config import from_dict
    from vqaudio.models.codec import Codec, CodecConfig

    codec = tmp_path / "codec.pt"
    config = yaml.safe_load((ROOT / "recipes" / "librispeech" / "conf" / "codec_tiny.yaml").read_text())["model"]
    Codec(from_dict(CodecConfig, config)).save_pretrained(codec)
    work = tmp_path / "work"
    args = ["vocoder.py", "--codec", str(codec), "--corpus", str(corpus), "--work", str(work), "--threads", "1"]
    args += ["--minutes-per-row", "0.05", "--max-test-utts", "2", "--conversion-sources", "1"]
    args += ["--conversion-targets", "1", "--kmeans-k", "16", "--batch-size", "3", "--adversarial-start", "never"]
    args += ["--num-workers", "0"]
    rows = ("codec_all", "codec_l0", "voc_l0_ref_f0", "voc_km_ref_f0_istft", "voc_l0_ge2e_f0")
    args += ["--rows", *rows]
    out = run(*args, timeout=300)
    for row in rows:
        result = json.loads((work / "rows" / row / "result.json").read_text())
        assert len(result["utterances"]) == 2, row
        for r in result["utterances"]:
            finite([r["log_mel"], r["stoi"], r["word_errors"] / r["ref_words"]], f"{row} {r['utt']}")
        vocoder = row.startswith("voc")
        assert len(result["conversions"]) == (1 if vocoder else 0), row
        assert (result["train"]["steps"] > 0) if vocoder else result["train"] is None, row
        assert (work / "rows" / row / "wav").is_dir()
    assert (work / "rows" / "voc_l0_ref_f0" / "exp" / "model.pt" / "unit_model").is_dir()
    trained = yaml.safe_load((work / "rows" / "voc_l0_ref_f0" / "exp" / "config.yaml").read_text())
    assert trained["data"]["batch_size"] == 3 and trained["loss"]["adversarial_start"] == 10**12
    originals = json.loads((work / "originals.json").read_text())["utterances"]
    finite([r["secs"] for r in originals] + [r["word_errors"] / r["ref_words"] for r in originals], "originals")
    table = (work / "RESULTS.md").read_text()
    assert table in out
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert sum(line.startswith(("| codec decoder", "| vocoder")) for line in lines) == 5 + 3, table
    originals_row = next(line for line in lines if line.startswith("| originals"))
    finite(numbers(originals_row), originals_row)
    verdicts = re.findall(r"\*\*(MET|MISSED)\*\*", table)
    assert len(verdicts) == 2 * 2 + 3 * 3, table  # 2 WER/STOI lines for each level-0 vocoder, 3 conversion lines
    assert "circular" in table
    assert (work / "conversion_matrix.png").stat().st_size > 0
    stamp = (work / "rows" / "codec_all" / "result.json").stat().st_mtime_ns
    assert run(*args).count("done before, skipped") == 5
    assert (work / "rows" / "codec_all" / "result.json").stat().st_mtime_ns == stamp
    assert run(*args, "--report").count("| vocoder") >= 3
    proc = subprocess.run(
        [sys.executable, str(BENCH / "vocoder.py"), *args[1:], "--seed", "1"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "come from other settings" in proc.stderr, proc.stderr[-2000:]
