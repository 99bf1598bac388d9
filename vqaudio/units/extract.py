"""Unit extraction at scale: sharded, resumable, batched by length, bad files logged and skipped.

Layout of a job's work in ``OUT_DIR/.work/``::

    state.json             what the extraction is made from: model checksum, n_q, dedup, nj, the utterances
    job<I>of<N>.jsonl      one JSON line per extracted utterance (utt, num_samples, codes per level)
    job<I>of<N>.failed     one JSON line per failed utterance (utt, reason)
    job<I>of<N>.done       written when job I has been through all of its utterances
    job<I>of<N>.lock       held (flock) while job I runs, so a second run of the same job is refused

A re-run checks ``state.json`` first and refuses, naming what differs, to resume work made from another model,
other levels or another utterance list. Utterances are read one at a time and encoded as soon as
``batch_seconds`` of audio is waiting (or at the end), so memory follows ``batch_seconds``, not the number or
length of the files; lines are appended whole and fsync'ed per batch, failures as they happen. A killed job
truncates a partial last line on restart and skips what it has, so nothing is duplicated or lost. When every
job of N is done, the outputs are merged in sorted order after checking that extracted + failed covers every
utterance: the records are found by byte offset in the jobs' files and read back one at a time into streaming
writers (each file renamed into place whole, see :mod:`vqaudio.units.formats`), so the merge's memory does
not grow with the corpus either.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pathlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..checkpoint import file_checksum
from ..data.audio import AudioError, is_file_source, load_audio, one_line
from ..data.kaldi import Utterance, data_name, read_data_dir, read_text, read_utt2dur, read_utt2spk
from ..errors import UserError
from ..fileio import atomic_write_text
from .formats import (
    FairseqWriter,
    KaldiUnitsWriter,
    NpyWriter,
    UnitsInfo,
    dedup_units,
    level_path,
    write_info,
    write_token_list,
)
from .model import UnitModel, load_unit_model_and_id
from .toolkits import (
    HfWriter,
    LhotseWriter,
    dataset_card,
    require_format_packages,
    source_cuts,
    split_name,
)

log = logging.getLogger(__name__)
FORMATS = ("kaldi", "fairseq", "npy", "lhotse", "hf")
# Audio encoded together: 20-30 utterances of LibriSpeech's length, enough to fill the LSTM's batches
# (vqaudio.models.context.GROUP_SIZE); 12 MiB of float32 samples waiting.
BATCH_SECONDS = 200.0


@dataclass
class ExtractResult:
    """Counts of one ``extract_units`` call (this job), its time in reading (and resampling) audio, encoding and
    writing units (``stage_seconds``), and whether the merged outputs were written."""

    extracted: int
    failed: int
    skipped: int
    audio_seconds: float
    wall_seconds: float
    stage_seconds: dict[str, float]
    merged: bool


def _complete_lines(path: pathlib.Path) -> int:
    """Cut a partial last line (a killed write) off ``path``; returns the size of its complete lines."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
    if end < size:
        with open(path, "r+b") as f:
            f.truncate(end)
        log.info("%s: dropped a partial last line left by a killed run", path)
    return end


def _record_heads(path: pathlib.Path):
    """``(utt, num_samples, byte offset)`` of each record of a job's ``.jsonl``, read a line at a time (flat
    memory, whatever the corpus) after cutting off a partial last line."""
    if not path.exists():
        return
    _complete_lines(path)
    with open(path, "rb") as f:
        offset = 0
        for line in f:
            if line.strip():
                utt, samples = _head(line, path)
                yield utt, samples, offset
            offset += len(line)


_KEYS = (b'{"utt":', b',"num_samples":', b',"codes":')


def _head(line: bytes, path: pathlib.Path) -> tuple[str, int]:
    """The ``utt`` and ``num_samples`` of one record, parsed from the line's head when it has the layout
    ``_append_lines`` writes (its codes are not parsed), else from the whole line."""
    utt_end = line.find(_KEYS[1])  # a JSON string holds a quote only escaped, so its key cannot occur in the id
    samples_end = line.find(_KEYS[2], utt_end)
    if line.startswith(_KEYS[0]) and 0 < utt_end < samples_end:
        with contextlib.suppress(ValueError):  # another layout: the whole line is parsed below
            utt = json.loads(line[len(_KEYS[0]) : utt_end])
            if isinstance(utt, str):
                return utt, int(line[utt_end + len(_KEYS[1]) : samples_end])
    try:
        record = json.loads(line)
        if isinstance(record["utt"], str) and type(record["num_samples"]) is int:
            return record["utt"], record["num_samples"]
    except (ValueError, KeyError, TypeError):
        pass
    raise UserError(f"{path}: a line is not an extraction record; remove the folder to start afresh")


def _codes_of(f, utt: str, n_q: int) -> list[list[int]]:
    """The first ``n_q`` levels of the record at ``f``'s position; a damaged record is one line naming it."""
    try:
        record = json.loads(f.readline())
        codes = record["codes"][:n_q]
        if record["utt"] == utt and len(codes) == n_q:
            return codes
    except (ValueError, KeyError, TypeError):
        pass
    raise UserError(
        f"{f.name}: the record of {utt} is damaged; remove its line (or the folder, to start afresh) and run again"
    )


def _read_failed(path: pathlib.Path) -> dict[str, str]:
    """``{utt: reason}`` of a job's ``.failed`` (one short line per failed utterance)."""
    if not path.exists():
        return {}
    end = _complete_lines(path)
    with open(path, "rb") as f:
        data = f.read(end)
    return {r["utt"]: r["reason"] for r in map(json.loads, filter(str.strip, data.decode().splitlines()))}


def _state(checksum: str, utts: list[Utterance], n_q: int, dedup: bool, nj: int) -> dict:
    listing = hashlib.sha256()
    for u in utts:
        listing.update(f"{u.utt_id}\t{u.source}\t{u.start}\t{u.end}\n".encode())
    return {
        "model_checksum": checksum,
        "n_q": n_q,
        "dedup": dedup,
        "nj": nj,
        "num_utterances": len(utts),
        "utterances_sha256": listing.hexdigest(),
    }


def check_state(work: pathlib.Path, state: dict, out: pathlib.Path, model_aliases: tuple[str, ...] = ()) -> None:
    """Record ``state`` in ``work/state.json``, or refuse (one line naming what differs) when the work there
    was made from something else; ``model_aliases`` are other checksums of the same model (the file
    checksum that work started before :func:`~vqaudio.checkpoint.model_checksum` recorded)."""
    path = work / "state.json"
    if not path.is_file():
        if any(f.suffix in (".jsonl", ".failed", ".done") for f in work.glob("job*of*.*")):
            raise UserError(
                f"{out}: holds extraction work with no record of what made it; "
                f"remove {work} (or use another --out) to start afresh"
            )
        atomic_write_text(path, json.dumps(state, indent=2) + "\n")
        return
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{path}: unreadable; remove {work} (or use another --out) to start afresh") from None
    differs = []
    if saved.get("model_checksum") not in (state["model_checksum"], *model_aliases):
        differs.append("model")
    for key, label in (("n_q", "--n-q"), ("dedup", "--dedup"), ("nj", "--nj")):
        if saved.get(key) != state[key]:
            differs.append(f"{label} ({saved.get(key)} then, {state[key]} now)")
    if saved.get("utterances_sha256") != state["utterances_sha256"]:
        differs.append(f"data dir ({saved.get('num_utterances')} utterances then, {state['num_utterances']} now)")
    if differs:
        raise UserError(
            f"{out} was extracted with a different " + ", ".join(differs) + f"; remove {work} "
            "(or use another --out) to start afresh, or run with the same inputs to resume"
        )


@contextlib.contextmanager
def job_lock(path: pathlib.Path, what: str):
    """Hold an exclusive ``flock`` on ``path`` for the block; a second holder is refused in one line."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"{what} is already running (lock {path}); wait for it or stop it first") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _append_lines(path: pathlib.Path, records: list[dict]) -> None:
    if not records:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def split_for_job(utts: list[Utterance], nj: int, job: int) -> list[Utterance]:
    """Contiguous block ``job`` (1-based) of ``nj`` near-equal blocks of the sorted utterances."""
    if nj < 1 or not 1 <= job <= nj:
        raise UserError(f"--job must lie in [1, --nj={nj}], got {job}")
    bounds = np.linspace(0, len(utts), nj + 1).round().astype(int)
    return utts[bounds[job - 1] : bounds[job]]


def extract_units(
    model: str | pathlib.Path,
    data_dir: str | pathlib.Path,
    out_dir: str | pathlib.Path,
    formats: tuple[str, ...] = ("kaldi",),
    dedup: bool = False,
    n_q: int | None = None,
    nj: int = 1,
    job: int = 1,
    device: str = "cpu",
    batch_seconds: float = BATCH_SECONDS,
    chunk_seconds: float = 30.0,
    progress: bool = True,
) -> ExtractResult:
    """Extract units of one job's share of ``data_dir`` into ``out_dir``; merge when all jobs are done.

    Args:
        model: a unit model: a codec (``model.pt`` of ``vqaudio train-codec``) or a k-means model
            (``vqaudio train-kmeans``).
        data_dir: Kaldi data dir (``wav.scp``, optional ``segments``) or lhotse cut manifest (``*.jsonl.gz``).
        out_dir: output dir (created).
        formats: any of ``kaldi``, ``fairseq``, ``npy`` (ESPnet style: ``npy/<utt>.npy`` arrays ``(T, n_q)``
            and ``codes.scp``), ``lhotse`` (``cuts.jsonl.gz`` with a ``units`` ``TemporalArray`` per cut) and
            ``hf`` (parquet shards and a dataset card); see :mod:`vqaudio.units.toolkits`.
        dedup: run-length dedup of frames (over the tuple of written levels); not with ``lhotse``, whose
            arrays keep one row per frame.
        n_q: residual levels to write (default all the codec has).
        nj, job: this process handles block ``job`` (1-based) of ``nj``.
        device: ``cpu`` or ``cuda``.
        batch_seconds: audio per batch, encoded together (:meth:`~vqaudio.models.Codec.encode_batch`: a codec's
            latent LSTM runs over the batch's utterances at once; an SSL model batches utterances of similar
            length) and written together.
        chunk_seconds: longer utterances are encoded in chunks of this length (flat memory, same units).
    """
    bad = sorted(set(formats) - set(FORMATS))
    if bad or not formats:
        raise UserError(f"--format must be a comma list of {FORMATS}, got {list(formats)}")
    if not batch_seconds > 0:
        raise UserError(f"--batch-seconds must be > 0, got {batch_seconds}")
    if dedup and "lhotse" in formats:
        raise UserError(
            "--dedup with --format lhotse: a TemporalArray holds one row per frame_shift; extract without "
            "--dedup (collapse repeats when you read them) or write lhotse in a separate --out"
        )
    require_format_packages(formats)
    model = pathlib.Path(model)
    codec, checksum = load_unit_model_and_id(model, map_location=device)  # the checksum: state, units.json
    codec = codec.to(device)
    if n_q is not None and not 1 <= n_q <= codec.n_q:
        raise UserError(f"--n-q must lie in [1, {codec.n_q}] for {model}, got {n_q}")
    n_q = n_q or codec.n_q
    utts = read_data_dir(data_dir)
    mine = split_for_job(utts, nj, job)
    out = pathlib.Path(out_dir)
    work = out / ".work"
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot create it ({err.strerror})") from None
    check_state(work, _state(checksum, utts, n_q, dedup, nj), out, (file_checksum(model),))
    stem = work / f"job{job}of{nj}"
    with job_lock(stem.with_suffix(".lock"), f"extract-units job {job} of {nj} into {out}"):
        counts = _run_job(codec, mine, stem, n_q, device, batch_seconds, chunk_seconds, progress, data_dir, job, nj)
    merged = all((work / f"job{j}of{nj}.done").exists() for j in range(1, nj + 1))
    if merged:
        with job_lock(work / "merge.lock", f"the merge of {out}"):
            _merge(codec, checksum, utts, out, work, nj, formats, dedup, n_q, data_dir, progress)
    return ExtractResult(*counts, merged)


def _run_job(codec, mine, stem, n_q, device, batch_seconds, chunk_seconds, progress, data_dir, job, nj):
    """Extract this job's utterances not yet in its ``.jsonl``; returns (extracted, failed, skipped, audio s,
    wall s, seconds per stage).

    Batches are cut from the job's whole utterance list, done or not (the lengths of those done are in their
    records), so a resumed job encodes every utterance with the same companions as an uninterrupted one: its
    units are the same to the bit, whatever batching rounds. A batch that was partly written when the job was
    killed is encoded whole again and only its missing utterances are written.
    """
    units_file, failed_file, done_file = (stem.with_suffix(s) for s in (".jsonl", ".failed", ".done"))
    have = {utt: samples for utt, samples, _ in _record_heads(units_file)}
    failed_file.unlink(missing_ok=True)  # earlier failures are retried
    order = list(mine)
    durations = read_utt2dur(data_dir)
    if durations:  # neighbours of near-equal length batch together
        order.sort(key=lambda u: durations.get(u.utt_id, 0.0))
    todo = sum(u.utt_id not in have for u in order)
    log.info("job %d/%d: %d utterances, %d already extracted, %d to do", job, nj, len(mine), len(have), todo)
    t0, audio_seconds, n_ok, n_failed = time.time(), 0.0, 0, 0
    stages = {"read": 0.0, "encode": 0.0, "write": 0.0}
    sr = codec.sample_rate
    batch_samples = int(batch_seconds * sr)
    bar = tqdm(total=todo, desc=f"extract job {job}/{nj}", unit="utt", disable=not progress)
    pending: list[tuple[Utterance, np.ndarray | None]] = []  # None: written by an earlier run, not read yet

    def read(u: Utterance) -> np.ndarray:
        start = time.perf_counter()
        try:
            return load_audio(u.source, sr, u.start, u.end, name=u.utt_id)
        finally:
            stages["read"] += time.perf_counter() - start

    def flush() -> None:
        nonlocal audio_seconds, n_ok
        if any(w is not None for _, w in pending):  # not all written before: encoded whole, as uninterrupted
            batch = [(u, read(u) if w is None else w) for u, w in pending]
            start = time.perf_counter()
            wavs = [torch.from_numpy(w) for _, w in batch]
            if device != "cpu":  # page-locked, so the copies to the GPU run asynchronously
                wavs = [w.pin_memory().to(device, non_blocking=True) for w in wavs]
            codes = [c.cpu() for c in codec.encode_batch(wavs, n_q=n_q, chunk_seconds=chunk_seconds)]
            stages["encode"] += time.perf_counter() - start
            start = time.perf_counter()
            records = []
            for (u, w), c in zip(batch, codes, strict=True):
                if u.utt_id not in have:
                    records.append({"utt": u.utt_id, "num_samples": int(w.shape[0]), "codes": c.tolist()})
                    audio_seconds += w.shape[0] / sr
            _append_lines(units_file, records)
            stages["write"] += time.perf_counter() - start
            n_ok += len(records)
            bar.update(len(records))
        pending.clear()

    waiting = 0
    for u, wav in _audio_in_order(order, have, read):
        if wav is None:
            pending.append((u, None))
            samples = have[u.utt_id]
        elif isinstance(wav, AudioError):
            log.warning("%s failed: %s", u.utt_id, wav)
            _append_lines(failed_file, [{"utt": u.utt_id, "reason": one_line(str(wav))}])
            n_failed += 1
            bar.update(1)
            continue
        else:
            pending.append((u, wav))
            samples = wav.shape[0]
        waiting += samples
        if waiting >= batch_samples:
            flush()
            waiting = 0
    flush()
    bar.close()
    atomic_write_text(done_file, f"{len(mine)}\n")
    wall = time.time() - t0
    if audio_seconds:
        log.info(
            "job %d/%d: %.2f h of audio in %.1f s = %.1f h of audio per hour (read %.1f s, encode %.1f s, "
            "write %.1f s)",
            job,
            nj,
            audio_seconds / 3600,
            wall,
            audio_seconds / wall,
            stages["read"],
            stages["encode"],
            stages["write"],
        )
    return n_ok, n_failed, len(have), audio_seconds, wall, stages


def _audio_in_order(order, have, read):
    """``(utterance, waveform | AudioError | None)`` in ``order`` (``None``: in ``have``, not read); an unreadable
    file is handed back in its place, any other error (a bug) is raised."""
    for u in order:
        if u.utt_id in have:
            yield u, None
            continue
        try:
            wav = read(u)
        except AudioError as err:
            wav = err
        yield u, wav


def _merge(
    codec: UnitModel,
    checksum: str,
    utts: list[Utterance],
    out: pathlib.Path,
    work: pathlib.Path,
    nj: int,
    formats,
    dedup: bool,
    n_q: int,
    data_dir: str | pathlib.Path,
    progress: bool = True,
) -> None:
    where: dict[str, tuple[int, int, int]] = {}  # utt: (job, byte offset of its record, num_samples)
    failed: dict[str, str] = {}
    for j in range(1, nj + 1):
        for utt, samples, offset in _record_heads(work / f"job{j}of{nj}.jsonl"):
            where[utt] = (j, offset, samples)
        failed.update(_read_failed(work / f"job{j}of{nj}.failed"))
    missing = [u.utt_id for u in utts if u.utt_id not in where and u.utt_id not in failed]
    if missing:
        raise UserError(
            f"merge into {out}: {len(missing)} utterance(s) neither extracted nor failed, e.g. "
            + ", ".join(missing[:5])
            + "; run the jobs that hold them again"
        )
    order = [u for u in utts if u.utt_id in where]  # sorted by utterance id (C locale)
    num_samples = {u.utt_id: where[u.utt_id][2] for u in order}
    log.info("merging %d utterances into %s", len(order), out)
    with contextlib.ExitStack() as stack:
        jobs = {j for j, _, _ in where.values()}
        jsonl = {j: stack.enter_context(open(work / f"job{j}of{nj}.jsonl", "rb")) for j in sorted(jobs)}
        sinks = _merge_sinks(stack, codec, checksum, out, formats, dedup, n_q, data_dir, order, num_samples)
        for u in tqdm(order, desc="merge", unit="utt", disable=not progress):
            j, offset, _ = where[u.utt_id]
            jsonl[j].seek(offset)
            codes = _codes_of(jsonl[j], u.utt_id, n_q)
            if dedup:
                kept = dedup_units(list(zip(*codes, strict=True)))
                codes = [list(level) for level in zip(*kept, strict=True)] if kept else [[] for _ in codes]
            for sink in sinks:
                sink(u, codes)
    if "kaldi" in formats:
        write_token_list(out / "tokens.txt", codec.codebook_size)
    atomic_write_text(
        out / "failed.txt", "".join(f"{utt}\t{one_line(reason)}\n" for utt, reason in sorted(failed.items()))
    )
    write_info(
        out,
        UnitsInfo(
            model_checksum=checksum,
            sample_rate=codec.sample_rate,
            frame_rate=codec.frame_rate,
            codebook_size=codec.codebook_size,
            n_q=n_q,
            dedup=dedup,
            num_utterances=len(order),
            num_failed=len(failed),
        ),
    )
    log.info("merged %d utterances (%d failed) into %s", len(order), len(failed), out)


def _merge_sinks(stack, codec, checksum, out, formats, dedup, n_q, data_dir, order, num_samples) -> list:
    """A writer per format, entered on ``stack`` (they commit when it closes without error); each is handed
    back as a function of ``(utterance, (n_q, T) units)``, to be called in ``order``."""
    sinks = []
    if "kaldi" in formats:
        kaldi = stack.enter_context(KaldiUnitsWriter([level_path(out, q) for q in range(n_q)]))
        sinks.append(lambda u, codes: kaldi.add(u.utt_id, codes))
    if "npy" in formats:
        npy = stack.enter_context(NpyWriter(out, codec.codebook_size))
        sinks.append(lambda u, codes: npy.add(u.utt_id, codes))
    if "fairseq" in formats:
        files = {u.source for u in order if is_file_source(u.source)}
        root = os.path.commonpath([os.path.dirname(os.path.abspath(s)) for s in files]) if files else ""
        fairseq = stack.enter_context(FairseqWriter(out, data_name(data_dir), root))

        def to_fairseq(u, codes):
            rel = os.path.relpath(os.path.abspath(u.source), root) if u.source in files else u.utt_id
            fairseq.add(rel, num_samples[u.utt_id], codes[0])

        sinks.append(to_fairseq)
    if "lhotse" in formats:
        cuts = source_cuts(data_dir, order, num_samples, codec.sample_rate)
        frame_shift = codec.hop_length / codec.sample_rate
        lhotse = stack.enter_context(LhotseWriter(out, frame_shift, codec.codebook_size))
        sinks.append(lambda u, codes: lhotse.add(next(cuts), codes))
    if "hf" in formats:
        texts, speakers = read_text(data_dir) or {}, read_utt2spk(data_dir) or {}
        frame_rate = float(codec.frame_rate)
        split = split_name(data_name(data_dir))
        card = dataset_card(
            split, data_name(data_dir), len(order), n_q, codec.codebook_size, frame_rate, checksum, dedup
        )
        hf = stack.enter_context(HfWriter(out, split, len(order), codec.codebook_size, card))
        sinks.append(
            lambda u, codes: hf.add(
                {
                    "id": u.utt_id,
                    "speaker": speakers.get(u.utt_id),
                    "text": texts.get(u.utt_id),
                    "units": codes,
                    "frame_rate": frame_rate,
                    "codec": checksum,
                }
            )
        )
    return sinks
