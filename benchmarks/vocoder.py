"""Unit vocoder on held-out voices (issue 22): the codec's own decoder against `vqaudio train-vocoder` on the
codec's level 0 and on MFCC k-means units, with a reference voice or a GE2E embedding, with and without F0,
at equal training time per vocoder; and voice conversion into unseen voices.

    python benchmarks/vocoder.py --codec CODEC/model.pt --threads 1 --minutes-per-row 5 --max-test-utts 12
    python benchmarks/vocoder.py --codec CODEC/model.pt --device cuda --threads 8 --minutes-per-row 30 \\
        --config recipes/librispeech/conf/vocoder_base.yaml                                   # one GPU
    # at a codec's CPU budget, as quality.py trains it (8 crops of 1 s, no discriminators)
    python benchmarks/vocoder.py --codec /tmp/q29/mel_encoder/model.pt --threads 1 --minutes-per-row 60 \\
        --config recipes/librispeech/conf/vocoder_base.yaml --batch-size 8 --segment-frames 50 --num-workers 0 \\
        --adversarial-start never --rows codec_all codec_l0 voc_l0_ref_f0

Needs pocketsphinx and Resemblyzer (``pip install 'vqaudio[eval]'``).

Data: ../shared/data/speech-mini split as in speech_mini.py: the held-out speakers (LibriSpeech test-other
1688, 2033, 3080, 533; VCTK p226; a LibriVox reader) are never trained on, everything else trains the k-means
model and the vocoders. ``--codec`` is a codec trained elsewhere (no codec is trained here); its level 0 is
the unit stream of the level-0 vocoders and the codec-decoder rows decode its codes.

Rows (``--rows``):

- ``codec_all``, ``codec_l0``: the codec's own decoder with all its levels, and with level 0 alone;
- ``voc_l0_ref_f0``, ``voc_l0_ref``: a vocoder on the codec's level 0 with the reference encoder (speaker
  mode ``reference``), with and without speaker-normalised quantised F0;
- ``voc_km_ref_f0``, ``voc_km_ref``: the same on MFCC k-means units (``--kmeans-k``, default 256, fitted here
  on the training speakers with the Python API of `vqaudio train-kmeans`);
- ``voc_l0_ref_f0_istft``, ``voc_km_ref_f0_istft``: ``voc_l0_ref_f0`` and ``voc_km_ref_f0`` with the iSTFT
  decoder (``decoder: istft``) in place of ``--config``'s;
- ``voc_l0_ref_f0_init``: ``voc_l0_ref_f0`` whose decoder starts as ``--codec``'s (its kind, shape and weights:
  ``train-vocoder --init-decoder``);
- ``voc_l0_ge2e_f0``: a vocoder on level 0 with F0 and the ``external`` speaker input, Resemblyzer GE2E
  d-vectors (per training speaker; of the reference utterance at test time). Its SECS is circular: the
  vocoder is conditioned on the very encoder that scores it, so it is flagged in every table.

Every vocoder starts from ``--config`` (vocoder_tiny.yaml by default) with the row's speaker and F0 settings
and trains through ``vqaudio.train.run_vocoder.train_vocoder`` (its data preparation, F0 cache, speaker
table and export) for ``--minutes-per-row`` of training wall time (data loading included), with a Lightning
trainer that stops on that budget as quality.py's does instead of at ``trainer.max_steps``; no validation
runs, the last weights are exported. One F0 cache (pYIN) serves every F0 row.

Scoring, on ``--max-test-utts`` held-out utterances (taken from each held-out speaker in turn): log-mel
distance and STOI against the original, pocketsphinx WER against the transcript (and the originals' own WER,
the ceiling), and SECS (GE2E cosine, Resemblyzer) to the mean embedding of the speaker's other held-out
utterances, as `vqaudio evaluate --speaker-sim` computes it. Each speaker's shortest utterances are scored
first (pocketsphinx runs at about real time on one CPU core). A vocoder resynthesizes each utterance with
`Vocoder.convert` in the voice of another utterance of the same speaker (the next one in id order), F0
moved to that reference's statistics.

Conversion matrix, for every vocoder row: ``--conversion-sources`` utterances of half of the held-out
speakers, each converted (`Vocoder.convert`) into each of ``--conversion-targets`` speakers of the other half,
whose reference is the target's longest utterance. Per pair: SECS to the target (mean embedding of the target's
utterances other than the reference), SECS to the source speaker (its utterances other than the source one)
and WER against the source's transcript. A speaker with no other utterance is compared with the one there
is (counted in the tables). Summary: the share of pairs closer to the target than to the source, the mean
margin (SECS target - SECS source) and the conversion WER against the same sources' resynthesis WER.
The issue's targets are checked for every vocoder row: (1) a level-0 vocoder has lower WER and higher STOI
than the codec's decoder at level 0; (2) at least 80 % of pairs closer to the target, mean margin >= 0.05;
(3) conversion WER at most 10 points above resynthesis WER.

Each row's result goes to WORK/rows/<row>/result.json (atomically) when it is done; a rerun skips finished
rows (and retrains a row whose training was interrupted) and refuses a WORK made with other settings (all
options but --rows and --report). WORK/RESULTS.md holds the tables, WORK/conversion_matrix.png the SECS
margins; --report rewrites both from the results in WORK.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import platform
import shlex
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from importlib.metadata import version
from unittest import mock

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
import yaml
from speech_mini import ROOT, SHARED, prepare_data

from vqaudio.checkpoint import model_checksum
from vqaudio.config import from_dict
from vqaudio.data import read_data_dir
from vqaudio.data.audio import load_audio
from vqaudio.data.kaldi import read_table, speakers_of
from vqaudio.errors import UserError
from vqaudio.fileio import atomic_output, atomic_write_text
from vqaudio.metrics import log_mel_distance, stoi
from vqaudio.train.config import TrainVocoderConfig

SR = 16000
NEVER = 10**12
TINY = ROOT / "recipes" / "librispeech" / "conf" / "vocoder_tiny.yaml"
PER_RUN = ("rows", "report")  # options that may differ between the runs that fill one work dir
# The issue's targets (issue 22, item 5).
CLOSER_SHARE = 0.8
MIN_MARGIN = 0.05
WER_SLACK = 0.10


@dataclass(frozen=True)
class Row:
    """A row: its label, unit model (``codec`` or ``kmeans``), decoder (``codec`` or ``vocoder``), the codec
    decoder's levels (``None``: all), a vocoder's speaker input and F0, its model overrides (``(field, value)``
    pairs of :class:`VocoderConfig`) and whether its decoder starts from ``--codec``'s (``init_decoder``)."""

    label: str
    units: str
    decoder: str
    n_q: int | None = None
    speaker: str | None = None
    f0: bool = False
    model: tuple = ()
    init_decoder: bool = False


ROWS = {
    "codec_all": Row("codec decoder, all levels", "codec", "codec"),
    "codec_l0": Row("codec decoder, level 0 only", "codec", "codec", n_q=1),
    "voc_l0_ref_f0": Row("vocoder, codec level 0, reference encoder, F0", "codec", "vocoder", None, "reference", True),
    "voc_l0_ref": Row("vocoder, codec level 0, reference encoder, no F0", "codec", "vocoder", None, "reference"),
    "voc_km_ref_f0": Row("vocoder, MFCC k-means, reference encoder, F0", "kmeans", "vocoder", None, "reference", True),
    "voc_km_ref": Row("vocoder, MFCC k-means, reference encoder, no F0", "kmeans", "vocoder", None, "reference"),
    "voc_l0_ge2e_f0": Row(
        "vocoder, codec level 0, GE2E embedding (external), F0 [SECS circular]",
        "codec",
        "vocoder",
        None,
        "external",
        True,
    ),
}
ISTFT = (("decoder", "istft"),)
ROWS["voc_l0_ref_f0_istft"] = Row(
    "vocoder, codec level 0, reference encoder, F0, iSTFT decoder", "codec", "vocoder", None, "reference", True, ISTFT
)
ROWS["voc_km_ref_f0_istft"] = Row(
    "vocoder, MFCC k-means, reference encoder, F0, iSTFT decoder", "kmeans", "vocoder", None, "reference", True, ISTFT
)
ROWS["voc_l0_ref_f0_init"] = Row(
    "vocoder, codec level 0, reference encoder, F0, decoder started from the codec's",
    "codec",
    "vocoder",
    None,
    "reference",
    True,
    init_decoder=True,
)
HEADLINE = "voc_l0_ref_f0"  # vocoder_base.yaml's setting: reference voice and F0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path: pathlib.Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


# held-out utterances: what is scored, the voices, the conversion pairs -----------------------------------------


def make_plan(test_dir: pathlib.Path, max_utts: int | None, n_sources: int, n_targets: int) -> dict:
    """The scored utterances (one per held-out speaker in turn, each speaker's shortest first: scoring time grows
    with the audio), each one's reference voice (the speaker's next utterance in id order, cyclically; itself
    when it is the speaker's only one), and the conversion pairs: sources from the speakers at even positions of
    the sorted speaker list, targets from those at odd ones, each target's reference its longest utterance."""
    utts = [u.utt_id for u in read_data_dir(test_dir)]
    speaker = speakers_of(utts, test_dir / "utt2spk")
    seconds = {u: float(d) for u, d in read_table(test_dir / "utt2dur").items()}
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utt in utts:
        by_speaker[speaker[utt]].append(utt)
    speakers = sorted(by_speaker)
    queues = [sorted(by_speaker[s], key=lambda u: (seconds[u], u)) for s in speakers]
    limit = len(utts) if max_utts is None else min(max_utts, len(utts))
    scored: list[str] = []
    while len(scored) < limit:
        for q in queues:
            if q and len(scored) < limit:
                scored.append(q.pop(0))

    def next_of(utt: str) -> str:
        own = by_speaker[speaker[utt]]
        return own[(own.index(utt) + 1) % len(own)]

    targets = speakers[1::2][:n_targets]
    source_speakers = set(speakers[0::2])
    sources = [u for u in scored if speaker[u] in source_speakers][:n_sources]
    if len(speakers) < 2 or not targets or not sources:
        raise SystemExit(
            f"{test_dir}: conversion needs held-out utterances of at least two speakers among those scored"
        )
    return {
        "utterances": utts,
        "speaker": speaker,
        "scored": scored,
        "voice": {u: next_of(u) for u in scored},
        "sources": sources,
        "targets": {t: max(by_speaker[t], key=lambda u: (seconds[u], u)) for t in targets},
    }


class Scorer:
    """pocketsphinx and Resemblyzer GE2E (loaded once), the transcripts and the held-out utterances' audio and
    GE2E embeddings (cached in WORK/test_embeddings.npz)."""

    def __init__(self, work: pathlib.Path, plan: dict) -> None:
        from vqaudio.scoring import Recognizer, SpeakerEncoder

        self.plan, self.speaker = plan, plan["speaker"]
        self.recognizer, self.encoder = Recognizer(), SpeakerEncoder()
        test = work / "data" / "test"
        self.text = read_table(test / "text", min_fields=1)
        self.audio = {u.utt_id: load_audio(u.source, SR, u.start, u.end, name=u.utt_id) for u in read_data_dir(test)}
        cache = work / "test_embeddings.npz"
        if cache.is_file():
            with np.load(cache) as data:
                self.embeddings = {k: data[k] for k in data.files}
        else:
            log(f"GE2E embeddings of the {len(self.audio)} held-out utterances")
            self.embeddings = {u: self.encoder.embed(w, SR, name=u) for u, w in self.audio.items()}
            with atomic_output(cache) as tmp, open(tmp, "wb") as f:
                np.savez(f, **self.embeddings)

    def speaker_embedding(self, spk: str, exclude: set[str]) -> tuple[np.ndarray, bool]:
        """The mean embedding of ``spk``'s held-out utterances outside ``exclude`` (all of them when none is
        left: then ``True``, a self-reference)."""
        from vqaudio.scoring.speaker import mean_embedding

        own = [u for u in self.plan["utterances"] if self.speaker[u] == spk]
        others = [u for u in own if u not in exclude]
        return mean_embedding([self.embeddings[u] for u in others or own]), not others

    def embed(self, wav: np.ndarray, name: str) -> np.ndarray | None:
        """GE2E of a hypothesis; ``None`` (and a line) when Resemblyzer finds too little speech in it."""
        try:
            return self.encoder.embed(wav, SR, name=name)
        except UserError as err:  # counted as unscored in the tables, as `vqaudio evaluate` does
            log(f"  no speaker embedding: {err}")
            return None

    def words(self, utt: str, wav: np.ndarray) -> dict:
        from vqaudio.scoring import word_errors

        heard = self.recognizer.transcribe(wav)
        counts = word_errors(self.text[utt], heard)
        return {"asr_text": heard, "word_errors": counts.errors, "ref_words": counts.ref_len}

    def utterance(self, utt: str, hyp: np.ndarray | None) -> dict:
        """Scores of one resynthesis of ``utt`` (``None``: the original itself, the ceiling)."""
        from vqaudio.scoring.speaker import cosine

        ref = self.audio[utt]
        wav = ref if hyp is None else hyp
        row = {"utt": utt, "speaker": self.speaker[utt], **self.words(utt, wav)}
        if hyp is not None:
            row.update(log_mel=log_mel_distance(ref, hyp, SR), stoi=stoi(ref, hyp, SR))
        target, self_ref = self.speaker_embedding(self.speaker[utt], {utt})
        emb = self.embeddings[utt] if hyp is None else self.embed(hyp, f"{utt} (hypothesis)")
        row.update(secs=None if emb is None else cosine(emb, target), secs_self_reference=self_ref)
        return row

    def conversion(self, source: str, target: str, reference: str, wav: np.ndarray) -> dict:
        from vqaudio.scoring.speaker import cosine

        emb = self.embed(wav, f"{source} in the voice of {target}")
        tgt, tgt_self = self.speaker_embedding(target, {reference})
        src, src_self = self.speaker_embedding(self.speaker[source], {source})
        row = {"source": source, "target": target, "reference": reference, **self.words(source, wav)}
        row.update(
            secs_target=None if emb is None else cosine(emb, tgt),
            secs_source=None if emb is None else cosine(emb, src),
            self_reference=tgt_self or src_self,
        )
        return row


# training -------------------------------------------------------------------------------------------------------


class Budget(pl.Callback):
    """Stops training after ``seconds`` of training wall time (batches and their loading; as quality.py's
    Budget), printing progress every ``report_seconds``. :meth:`fit` stands in for
    ``vqaudio.train.experiment.fit`` inside ``train_vocoder``."""

    def __init__(self, seconds: float, device: str, report_seconds: float = 60.0) -> None:
        self.seconds, self.device, self.report_seconds = seconds, device, report_seconds
        self.train_time, self.next_report, self.steps = 0.0, report_seconds, 0

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_train_start(self, trainer, task) -> None:
        self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx) -> None:
        self._sync()
        now = time.perf_counter()
        self.train_time += now - self.last
        self.steps = int(task.gen_steps)
        if self.train_time >= self.next_report:
            mel = trainer.callback_metrics.get("train/mel")
            mel = f", mel loss {float(mel):.3f}" if mel is not None else ""
            log(f"  {self.train_time / 60:5.1f} min {self.steps:6d} steps{mel}")
            self.next_report += self.report_seconds
        if self.train_time >= self.seconds:
            trainer.should_stop = True
        self._sync()
        self.last = time.perf_counter()

    def fit(self, task, train_loader, valid_loader, t, exp_dir, resume, monitor, max_steps=-1):
        """``experiment.fit``'s contract (returns the trainer and the checkpoint to export) with this budget as
        the only stopping rule; no validation (``valid_loader`` and ``monitor`` unused), no resume."""
        trainer = pl.Trainer(
            accelerator=t.accelerator,
            devices=1,
            precision=t.precision,
            max_epochs=-1,
            max_steps=-1,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[self],
        )
        trainer.fit(task, train_loader)
        last = pathlib.Path(exp_dir) / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(last, weights_only=False)
        return trainer, last


def vocoder_config(args, row: Row, work: pathlib.Path) -> TrainVocoderConfig:
    """``--config`` with the row's speaker input and F0, the shared F0 cache, and no step limit."""
    cfg = from_dict(TrainVocoderConfig, yaml.safe_load(pathlib.Path(args.config).read_text()), where=str(args.config))
    cfg.model = dataclasses.replace(cfg.model, speaker=row.speaker, f0=row.f0, levels=[0], **dict(row.model))
    if row.init_decoder:
        cfg.init_decoder = str(args.codec)
    cfg.data.f0_cache = str(work / "f0_cache")  # pYIN runs once over the training audio for every F0 row
    for section, key, value in (
        (cfg.data, "batch_size", args.batch_size),
        (cfg.data, "segment_frames", args.segment_frames),
        (cfg.data, "num_workers", args.num_workers),
        (cfg.loss, "adversarial_start", args.adversarial_start),
    ):
        if value is not None:
            setattr(section, key, value)
    cfg.trainer.max_steps = NEVER
    cfg.trainer.seed = args.seed
    cfg.trainer.accelerator = "gpu" if args.device == "cuda" else "cpu"
    cfg.trainer.devices = "1"
    if args.device == "cpu":
        cfg.trainer.precision = "32-true"
    return cfg


def train_row(name: str, row: Row, args, work: pathlib.Path, unit_model: pathlib.Path) -> dict:
    """Train (or find trained) the row's vocoder in WORK/rows/<name>/exp; its training record."""
    from vqaudio.train import run_vocoder

    folder = work / "rows" / name
    record = folder / "train.json"
    if record.is_file():
        return json.loads(record.read_text())
    exp = folder / "exp"
    if exp.exists():  # an interrupted training: start it again
        shutil.rmtree(exp)
    units = work / "units" / row.units
    budget = Budget(args.minutes_per_row * 60, args.device)
    log(f"{name}: training for {args.minutes_per_row:g} min on {row.units} units")
    t0 = time.perf_counter()
    with mock.patch.object(run_vocoder, "fit", budget.fit):
        run_vocoder.train_vocoder(
            vocoder_config(args, row, work),
            units / "train",
            work / "data" / "train",
            unit_model,
            exp,
            valid_units=units / "dev",
            valid_data=work / "data" / "dev",
            progress=False,
        )
    result = {
        "steps": budget.steps,
        "train_minutes": budget.train_time / 60,
        "steps_per_s": budget.steps / max(budget.train_time, 1e-9),
        "wall_minutes": (time.perf_counter() - t0) / 60,  # F0 and GE2E of the training audio included
    }
    write_json(record, result)
    log(f"{name}: {result['steps']} steps in {result['train_minutes']:.1f} min ({result['wall_minutes']:.1f} min wall)")
    return result


# rows -----------------------------------------------------------------------------------------------------------


def save_wav(path: pathlib.Path, wav: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        sf.write(tmp, wav, SR, format="WAV", subtype="PCM_16")


def run_row(name: str, args, work: pathlib.Path, plan: dict, scorer: Scorer, unit_models: dict) -> dict:
    row = ROWS[name]
    folder = work / "rows" / name
    train = None
    if row.decoder == "vocoder":
        train = train_row(name, row, args, work, unit_models[row.units])
    t0 = time.perf_counter()
    utterances, conversions = [], []
    if row.decoder == "codec":
        from vqaudio import Codec

        codec = Codec.from_pretrained(args.codec, map_location=args.device).to(args.device).eval()
        n_q = row.n_q or codec.n_q
        for utt in plan["scored"]:
            wav = scorer.audio[utt]
            with torch.no_grad():
                x = torch.from_numpy(wav)[None, None].to(args.device)
                hyp = codec.decode(codec.encode(x)[:, :n_q], length=len(wav))[0, 0].clamp(-1, 1).float().cpu().numpy()
            save_wav(folder / "wav" / f"{utt}.wav", hyp)
            utterances.append(scorer.utterance(utt, hyp))
    else:
        from vqaudio.models.vocoder import Vocoder

        vocoder = Vocoder.from_pretrained(folder / "exp" / "model.pt", map_location=args.device).to(args.device)
        voices: dict[str, object] = {}

        def voice(utt: str):
            if utt not in voices:
                voices[utt] = vocoder.voice(scorer.audio[utt])
            return voices[utt]

        for utt in plan["scored"]:
            hyp = vocoder.convert(scorer.audio[utt], voice(plan["voice"][utt])).numpy()
            save_wav(folder / "wav" / f"{utt}.wav", hyp)
            utterances.append({**scorer.utterance(utt, hyp), "reference": plan["voice"][utt]})
        for source in plan["sources"]:
            for target, reference in plan["targets"].items():
                hyp = vocoder.convert(scorer.audio[source], voice(reference)).numpy()
                save_wav(folder / "conversion" / f"{source}_to_{target}.wav", hyp)
                conversions.append(scorer.conversion(source, target, reference, hyp))
    result = {
        "row": name,
        "label": row.label,
        "train": train,
        "utterances": utterances,
        "conversions": conversions,
        "score_minutes": (time.perf_counter() - t0) / 60,
    }
    if row.decoder == "codec":
        result["codec_levels"] = n_q
    return result


def originals(work: pathlib.Path, plan: dict, scorer: Scorer) -> dict:
    path = work / "originals.json"
    if not path.is_file():
        log(f"originals: pocketsphinx on the {len(plan['scored'])} scored utterances (the ceiling)")
        t0 = time.perf_counter()
        rows = [scorer.utterance(utt, None) for utt in plan["scored"]]
        write_json(path, {"utterances": rows, "score_minutes": (time.perf_counter() - t0) / 60})
    return json.loads(path.read_text())


def unit_models(args, work: pathlib.Path, rows: list[str]) -> dict[str, pathlib.Path]:
    """The unit models the rows need (the codec; the k-means model, fitted here) and their units of the training
    sets (WORK/units/<codec|kmeans>/<train|dev>), each made once."""
    from vqaudio.units.extract import extract_units
    from vqaudio.units.kmeans import KMeansConfig, train_kmeans

    models = {"codec": pathlib.Path(args.codec), "kmeans": work / "kmeans" / f"mfcc{args.kmeans_k}.pt"}
    needed = sorted({ROWS[r].units for r in rows if ROWS[r].decoder == "vocoder"})
    if "kmeans" in needed and not models["kmeans"].exists():
        log(f"k-means: MFCC, K = {args.kmeans_k}, on the training speakers")
        train_kmeans(work / "data" / "train", models["kmeans"], KMeansConfig(k=args.kmeans_k), seed=args.seed)
    for unit in needed:
        for part in ("train", "dev"):
            out = work / "units" / unit / part
            if not (out / "units.json").is_file():
                log(f"units of {unit} for {part}")
                extract_units(models[unit], work / "data" / part, out, n_q=1, device=args.device, progress=False)
    return models


# report ---------------------------------------------------------------------------------------------------------


def wer(rows: list[dict]) -> float:
    """Word errors over reference words (totals, as `vqaudio evaluate --asr`)."""
    words = sum(r["ref_words"] for r in rows)
    return sum(r["word_errors"] for r in rows) / words if words else math.nan


def mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def summary(result: dict) -> dict:
    """The row's figures: means over the scored utterances and the conversion summary."""
    utts = result["utterances"]
    out = {
        "log_mel": mean(r.get("log_mel") for r in utts),
        "stoi": mean(r.get("stoi") for r in utts),
        "wer": wer(utts),
        "secs": mean(r["secs"] for r in utts),
        "secs_unscored": sum(r["secs"] is None for r in utts),
        "n": len(utts),
    }
    pairs = result["conversions"]
    if pairs:
        scored = [p for p in pairs if p["secs_target"] is not None]
        margins = [p["secs_target"] - p["secs_source"] for p in scored]
        sources = {p["source"] for p in pairs}
        out.update(
            pairs=len(pairs),
            pairs_unscored=len(pairs) - len(scored),
            pairs_self_reference=sum(p["self_reference"] for p in pairs),
            closer=sum(m > 0 for m in margins) / len(pairs),
            secs_target=mean(p["secs_target"] for p in scored),
            secs_source=mean(p["secs_source"] for p in scored),
            margin=mean(margins),
            conversion_wer=wer(pairs),
            resynthesis_wer=wer([r for r in utts if r["utt"] in sources]),
        )
    return out


def fmt(x: float, spec: str = ".3f") -> str:
    return "n/a" if x is None or math.isnan(x) else format(x, spec)


def targets(results: dict[str, dict], sums: dict[str, dict]) -> list[tuple[str, str, str, str, str]]:
    """``(target, row, measured, needed, MET|MISSED)`` for every vocoder row that has the figures."""
    out = []
    base = sums.get("codec_l0")
    for name, s in sums.items():
        row = ROWS[name]
        if row.decoder != "vocoder":
            continue
        label = f"`{name}`" + (" (headline)" if name == HEADLINE else "")
        if row.units == "codec" and base is not None:
            out.append(
                (
                    "1. WER below the codec decoder at level 0",
                    label,
                    f"{100 * s['wer']:.1f} %",
                    f"< {100 * base['wer']:.1f} %",
                    "MET" if s["wer"] < base["wer"] else "MISSED",
                )
            )
            out.append(
                (
                    "1. STOI above the codec decoder at level 0",
                    label,
                    fmt(s["stoi"]),
                    f"> {fmt(base['stoi'])}",
                    "MET" if s["stoi"] > base["stoi"] else "MISSED",
                )
            )
        if "pairs" in s:
            circular = " (circular: conditioned on the scoring encoder)" if row.speaker == "external" else ""
            out.append(
                (
                    "2. pairs closer to the target than to the source" + circular,
                    label,
                    f"{100 * s['closer']:.0f} % of {s['pairs']}",
                    f">= {100 * CLOSER_SHARE:.0f} %",
                    "MET" if s["closer"] >= CLOSER_SHARE else "MISSED",
                )
            )
            out.append(
                (
                    "2. mean margin, SECS target - SECS source" + circular,
                    label,
                    fmt(s["margin"]),
                    f">= {MIN_MARGIN}",
                    "MET" if s["margin"] >= MIN_MARGIN else "MISSED",
                )
            )
            out.append(
                (
                    "3. conversion WER at most 10 points above resynthesis",
                    label,
                    f"{100 * s['conversion_wer']:.1f} %",
                    f"<= {100 * s['resynthesis_wer']:.1f} + {100 * WER_SLACK:.0f} %",
                    "MET" if s["conversion_wer"] <= s["resynthesis_wer"] + WER_SLACK else "MISSED",
                )
            )
    return out


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    if pathlib.Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    text = f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, Python {platform.python_version()}"
    if device == "cuda":
        text += f", {torch.cuda.get_device_name(0)}"
    return text


def write_report(
    work: pathlib.Path, results: dict[str, dict], orig: dict, plan: dict, settings: dict, echo: bool = True
) -> None:
    sums = {name: summary(r) for name, r in results.items()}
    ceiling = orig["utterances"]
    n = len(ceiling)
    lines = [
        f"# Unit vocoder on held-out speakers, {time.strftime('%Y-%m-%d')}",
        "",
        f"Command: `python benchmarks/vocoder.py {shlex.join(settings['argv'])}`",
        f"Machine: {machine(settings['device'])}; {settings['threads']} thread(s).",
        f"Codec: `{settings['codec']}` ({settings['codec_checksum'][:12]}); vocoder config `{settings['config']}`; "
        f"{settings['minutes_per_row']:g} min of training per vocoder row.",
        f"Scored: {n} held-out utterances of {len({r['speaker'] for r in ceiling})} speakers; "
        f"conversion: {len(plan['sources'])} sources x {len(plan['targets'])} target voices.",
        f"Scorers: pocketsphinx {version('pocketsphinx')} (its en-US model) for WER, Resemblyzer "
        f"{version('resemblyzer')} (its GE2E encoder) for SECS.",
        "",
        "| row | steps | log-mel (lower) | STOI (higher) | WER % (lower) | SECS own speaker (higher) |",
        "|---|---:|---:|---:|---:|---:|",
        f"| originals (the ceiling) | | | | {100 * wer(ceiling):.1f} | {fmt(mean(r['secs'] for r in ceiling))} |",
    ]
    for name, r in results.items():
        s = sums[name]
        steps = r["train"]["steps"] if r["train"] else ""
        unscored = f" ({s['secs_unscored']} unscored)" if s["secs_unscored"] else ""
        label = r["label"] + (f" ({r['codec_levels']})" if "codec_levels" in r else "")
        lines.append(
            f"| {label} | {steps} | {fmt(s['log_mel'])} | {fmt(s['stoi'])} | {100 * s['wer']:.1f} | "
            f"{fmt(s['secs'])}{unscored} |"
        )
    self_refs = sum(r["secs_self_reference"] for r in ceiling)
    if self_refs:
        lines += ["", f"SECS of {self_refs} utterance(s) compared with themselves (their speaker has no other)."]
    conv = [name for name in results if "pairs" in sums[name]]
    if conv:
        lines += [
            "",
            "Conversion into unseen voices (per row: all pairs; margin = SECS target - SECS source; resynthesis WER "
            "on the same source utterances):",
            "",
            "| row | pairs | closer to target | SECS target | SECS source | mean margin | conversion WER % | "
            "resynthesis WER % |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name in conv:
            s = sums[name]
            extra = f" ({s['pairs_unscored']} unscored)" if s["pairs_unscored"] else ""
            lines.append(
                f"| {results[name]['label']} | {s['pairs']}{extra} | {100 * s['closer']:.0f} % | "
                f"{fmt(s['secs_target'])} | {fmt(s['secs_source'])} | {fmt(s['margin'])} | "
                f"{100 * s['conversion_wer']:.1f} | {100 * s['resynthesis_wer']:.1f} |"
            )
        self_pairs = max(sums[name]["pairs_self_reference"] for name in conv)
        if self_pairs:
            lines += ["", f"{self_pairs} pair(s) compared with the reference or source utterance itself."]
        lines += [
            "",
            "Targets (issue 22):",
            "",
            "| target | row | measured | needed | verdict |",
            "|---|---|---:|---:|---|",
        ]
        lines += [f"| {t} | {r} | {m} | {need} | **{v}** |" for t, r, m, need, v in targets(results, sums)]
        for name in conv:
            pairs = results[name]["conversions"]
            tgts = list(plan["targets"])
            lines += [
                "",
                f"`{name}`, SECS target / SECS source / WER % per pair (targets' references: "
                + ", ".join(f"{t}: {ref}" for t, ref in plan["targets"].items())
                + "):",
                "",
                "| source | " + " | ".join(tgts) + " |",
                "|---|" + "---:|" * len(tgts),
            ]
            for source in plan["sources"]:
                cells = []
                for t in tgts:
                    p = next(p for p in pairs if p["source"] == source and p["target"] == t)
                    w = 100 * p["word_errors"] / p["ref_words"] if p["ref_words"] else math.nan
                    cells.append(f"{fmt(p['secs_target'], '.2f')} / {fmt(p['secs_source'], '.2f')} / {w:.0f}")
                lines.append(f"| {source} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Time per row (minutes): "
        + ", ".join(
            f"{name} "
            + (
                f"train {r['train']['train_minutes']:.1f} (wall {r['train']['wall_minutes']:.1f}), "
                if r["train"]
                else ""
            )
            + f"scoring {r['score_minutes']:.1f}"
            for name, r in results.items()
        )
        + f"; originals scoring {orig['score_minutes']:.1f}.",
    ]
    text = "\n".join(lines) + "\n"
    atomic_write_text(work / "RESULTS.md", text)
    if echo:
        print(text, flush=True)
    if conv:
        plot_matrix(work / "conversion_matrix.png", {name: results[name] for name in conv}, plan)


def plot_matrix(path: pathlib.Path, results: dict[str, dict], plan: dict) -> None:
    """Heat maps of the SECS margin (target - source) per pair, one per vocoder row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tgts, srcs = list(plan["targets"]), plan["sources"]
    grids = {}
    for name, r in results.items():
        grid = np.full((len(srcs), len(tgts)), np.nan)
        for p in r["conversions"]:
            if p["secs_target"] is not None:
                grid[srcs.index(p["source"]), tgts.index(p["target"])] = p["secs_target"] - p["secs_source"]
        grids[name] = grid
    finite = [abs(v) for g in grids.values() for v in g.ravel() if np.isfinite(v)]
    limit = max(finite + [MIN_MARGIN])
    fig, axes = plt.subplots(1, len(grids), figsize=(2.2 + 1.1 * len(tgts) * len(grids), 1.6 + 0.45 * len(srcs)))
    axes = np.atleast_1d(axes)
    for ax, (name, grid) in zip(axes, grids.items(), strict=True):
        image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(len(srcs)):
            for j in range(len(tgts)):
                ax.text(j, i, fmt(grid[i, j], ".2f"), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(tgts)), tgts, fontsize=7)
        ax.set_yticks(range(len(srcs)), srcs if ax is axes[0] else [""] * len(srcs), fontsize=6)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("target speaker", fontsize=7)
    fig.colorbar(image, ax=list(axes), label="SECS target - SECS source")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


# main -----------------------------------------------------------------------------------------------------------


def settings_of(args: argparse.Namespace) -> dict:
    """The options that every run filling one work dir must share, as WORK/config.yaml records them."""
    return {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(args).items() if k not in PER_RUN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", type=pathlib.Path, required=True, help="a trained codec (model.pt of train-codec)")
    parser.add_argument("--config", type=pathlib.Path, default=TINY, help="vocoder config the rows start from")
    parser.add_argument("--minutes-per-row", type=float, default=10.0, help="training wall time per vocoder row")
    parser.add_argument("--max-test-utts", type=int, default=None, help="held-out utterances scored (default all)")
    parser.add_argument("--conversion-sources", type=int, default=4, help="source utterances converted")
    parser.add_argument("--conversion-targets", type=int, default=3, help="target voices (held-out speakers)")
    parser.add_argument("--kmeans-k", type=int, default=256, help="units of the MFCC k-means model")
    parser.add_argument("--batch-size", type=int, help="training batch (default: --config's data.batch_size)")
    parser.add_argument("--segment-frames", type=int, help="training crop in frames (default: --config's)")
    parser.add_argument("--num-workers", type=int, help="data loader workers (default: --config's)")
    parser.add_argument(
        "--adversarial-start",
        type=lambda x: NEVER if x == "never" else int(x),
        help="step the discriminators start, or 'never' (default: --config's loss.adversarial_start)",
    )
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/vqaudio_vocoder"), help="work dir")
    parser.add_argument("--corpus", type=pathlib.Path, default=SHARED, help="speech-mini (default ../shared/...)")
    parser.add_argument("--report", action="store_true", help="only rewrite RESULTS.md and the plot from WORK")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if not args.codec.exists():
        raise SystemExit(f"--codec {args.codec}: not found (train one with vqaudio train-codec)")
    torch.set_num_threads(args.threads)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    settings = settings_of(args)
    settings["codec_checksum"] = model_checksum(args.codec)
    settings["vocoder_config"] = yaml.safe_load(args.config.read_text())
    saved = work / "config.yaml"
    if saved.is_file():
        old = yaml.safe_load(saved.read_text())
        if old["settings"] != settings:
            raise SystemExit(f"{saved}: the results in {work} come from other settings; use another --work")
    else:
        atomic_write_text(saved, yaml.safe_dump({"settings": settings}))
    if not (work / "data" / "test" / "wav.scp").is_file():
        prepare_data(work, args.corpus)
    plan_path = work / "plan.json"
    if not plan_path.is_file():
        args_plan = (args.max_test_utts, args.conversion_sources, args.conversion_targets)
        write_json(plan_path, make_plan(work / "data" / "test", *args_plan))
    plan = json.loads(plan_path.read_text())
    settings["argv"] = sys.argv[1:]

    def done() -> dict[str, dict]:
        paths = {name: work / "rows" / name / "result.json" for name in ROWS}
        return {name: json.loads(p.read_text()) for name, p in paths.items() if p.is_file()}

    if args.report:
        write_report(work, done(), json.loads((work / "originals.json").read_text()), plan, settings)
        return
    t0 = time.perf_counter()
    todo = [name for name in args.rows if not (work / "rows" / name / "result.json").is_file()]
    for name in args.rows:
        if name not in todo:
            log(f"{name}: done before, skipped")
    if todo or not (work / "originals.json").is_file():
        scorer = Scorer(work, plan)
        orig = originals(work, plan, scorer)
        models = unit_models(args, work, todo)
    else:
        orig = json.loads((work / "originals.json").read_text())
    for name in todo:
        path = work / "rows" / name / "result.json"
        log(f"{name}: {ROWS[name].label}")
        result = run_row(name, args, work, plan, scorer, models)
        write_json(path, result)
        s = summary(result)
        log(
            f"{name}: scored in {result['score_minutes']:.1f} min: log-mel {fmt(s['log_mel'])}, STOI {fmt(s['stoi'])}, "
            f"WER {100 * s['wer']:.1f} %, SECS {fmt(s['secs'])}"
            + (f", {100 * s['closer']:.0f} % of pairs closer, margin {fmt(s['margin'])}" if "pairs" in s else "")
        )
        write_report(work, done(), orig, plan, settings, echo=False)
    write_report(work, done(), orig, plan, settings)
    log(f"finished in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
