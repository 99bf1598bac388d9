"""``vqaudio extract-units``, ``resynth``, ``evaluate``, ``encode``, ``decode``."""

from __future__ import annotations

import argparse
import pathlib

from ..errors import UserError
from .options import add_pipe_timeout, check_device

EXTRACT_HELP = """Extract units from a Kaldi data dir or a lhotse cut manifest with a trained codec.

Writes OUT_DIR/units (Kaldi/ESPnet text, level 0), units.level<q> for further residual levels,
tokens.txt (ESPnet token list), units.json (model checksum, sample rate, frame rate, codebook size,
n_q, dedup), with --format fairseq also <set>.tsv + <set>.km, with --format npy ESPnet-style
npy/<utt>.npy arrays (T, n_q) and codes.scp, with --format lhotse cuts.jsonl.gz (a CutSet whose cuts
carry the custom field "units", a TemporalArray (T, n_q) stored under lhotse_units/; pip install
'vqaudio[lhotse]'), with --format hf parquet shards data/<set>-*.parquet and a dataset card README.md
(pip install 'vqaudio[hf]'); failed.txt lists unreadable files. --data may be a lhotse cut manifest
(*.jsonl.gz or *.jsonl): each cut is an utterance (its channels averaged to mono), its supervisions give
text and speaker.

Sharding: --nj N --job I handles block I of N (run the N jobs anywhere, e.g. one per SLURM task); the
job that finishes last merges everything in sorted order. Resumable: run the same command again after
a kill and it continues where it stopped (no duplicated or truncated lines).

Exit status 0 only when every utterance was extracted; the last line says how many failed.

example:
  vqaudio extract-units --model exp/codec/model.pt --data data/dev_clean_2 --out exp/units/dev_clean_2
  vqaudio extract-units --model exp/codec/model.pt --data cuts_dev.jsonl.gz --out exp/units/dev \
      --format lhotse,hf
"""


ENCODE_HELP = """Encode audio to codes files with a trained codec.

One input file and an output with a suffix writes that file; otherwise the output is a directory and
every input file (directories are searched recursively, globs expanded) keeps its relative path there,
with --suffix. Formats by suffix: .vqc (default: magic, version, JSON header with the model's sha256,
sample rate and exact sample count, then codes bit-packed at ceil(log2 K) bits: nominal bitrate x
duration plus ~300 bytes), .npy (an (n_q, T) integer array, ESPnet style) and .txt (one line per level);
an output of any other suffix is refused. Several inputs need -o DIR; without -o, a second argument is the
output only when it does not exist yet. Files of other suffixes are skipped with a note. A file that fails
is reported on stderr in one line and the others are written (exit status 1); in a directory, outputs
already there are kept and not redone, so a rerun resumes (-f redoes them); a single existing output file
is refused without -f. A progress bar goes to stderr when it is a terminal; the last line gives the
real-time factor. `cmd |` inputs are not accepted here: pass files.

examples:
  vqaudio encode --model exp/codec/model.pt speech.flac -o speech.vqc
  vqaudio encode --model exp/codec/model.pt corpus/wavs -o codes/ --n-q 4 --device cuda
  vqaudio encode --model exp/codec/model.pt 'clips/*.wav' -o codes/ --suffix .npy
"""


DECODE_HELP = """Decode codes files to audio with the codec that made them.

A .vqc file restores the input's exact length and is refused when made by another model file (its
sha256 is in the header) unless --any-model; a truncated or corrupt file is an error, never a wrong
waveform. .npy and .txt decode to frames x hop samples (.npy arrays are (n_q, T), except extract-units'
OUT/npy/<utt>.npy beside OUT/codes.scp, which are (T, n_q)). Directories, globs, failures, reruns and -f
as for encode.

examples:
  vqaudio decode --model exp/codec/model.pt speech.vqc -o speech.wav
  vqaudio decode --model exp/codec/model.pt codes/ -o resynth/ --suffix .flac
"""


RESYNTH_HELP = """Turn units (a units dir, its units file, or a fairseq .km) into wav files and a wav.scp.

--model: the codec that made the units decodes them with its own decoder (--n-q levels). --vocoder: a
unit vocoder (train-vocoder) decodes units of its unit model (units of another are refused), in the
voice of a training speaker (--speaker ID), of a reference utterance (--reference WAV), of each
utterance's own speaker (--own-voice: the longest other utterance of that speaker in --data is the
reference; OUT/utt2reference says which), or with no speaker; an F0 vocoder takes the source audio's
pitch contour from --data (--f0 source; normalised per speaker, so the voice sets its level and range).
OUT/request.json records what was asked (the model, the units, the voice, F0, the data): a rerun with the
same request resumes (existing wavs are kept), one with another request is refused in one line naming what
differs (-f redoes every file); an --out that is an input (the units or data dir) or holds files this
command did not write (a data dir's wav.scp) is refused. Each file is written whole or not at all.

examples:
  vqaudio resynth --model exp/codec/model.pt --units exp/units/dev_clean_2 --out exp/resynth/dev_clean_2
  vqaudio resynth --vocoder exp/vocoder/model.pt --units exp/units/dev_clean_2 --reference target.flac \\
      --data data/dev_clean_2 --out exp/resynth_vocoder/dev_clean_2
  vqaudio resynth --vocoder exp/vocoder/model.pt --units exp/units/dev_clean_2 --own-voice \
      --data data/dev_clean_2 --out exp/resynth_vocoder/dev_clean_2      # unseen speakers, each in its voice
"""


EVALUATE_UNITS_HELP = """How much phonetic information units carry, against forced phone alignments.

Writes OUT/unit_quality.json (pnmi, phone_purity, cluster_purity, abx_within, abx_across,
abx_phone_any_context, counts, and probe_per with --probe), OUT/RESULTS.md (the table), OUT/abx.item
(the items in the Libri-light/fastabx format, to rescore with fastabx) and OUT/phone_unit_heatmap.png.

Frames are labelled with the phone at their centre (SIL where no phone is aligned; SIL, sil, <sil> and SP
are silence). ABX (Libri-light / ZeroSpeech 2021): triphone items, one-hot units, angular distance, DTW
over each item's frames; error in percent. The probe trains a small CTC phone recogniser on the units of
3 in 4 speakers and reports the phone error rate on the others.

example:
  vqaudio evaluate-units --units exp/units/test_other --alignments speech-mini.phones.ctm \
      --data data/test_other --out exp/unit_quality/test_other --probe
"""


EVALUATE_HELP = """Score resynthesized audio against references, or a codec at several residual depths.

--ref REF --hyp HYP: per-utterance CSV, metrics.json and RESULTS.md (log-mel and MR-STFT distance, SI-SDR,
STOI, wide-band PESQ; with --units also bitrate, token rate, codebook usage and unit entropy) and PNG plots.
--asr, --speaker-sim and --f0 add scores from pretrained models (pip install 'vqaudio[eval]').

--model M --data D: resynthesizes every utterance of D with the codec at each --n-q depth and scores it:
metrics.json holds by_n_q (every metric per depth), unquantized (the decoder fed the encoder's own
latents: the ceiling no depth can pass), latent_error (the mean relative latent error
||z - sum of the first q levels|| / ||z|| after each level) and each level's code usage and perplexity;
RESULTS.md a table per depth and per level, quality_by_n_q.png the curves; the job logs to OUT/evaluate.log.

examples:
  vqaudio evaluate --ref data/dev_clean_2 --hyp exp/resynth/dev_clean_2 --units exp/units/dev_clean_2 \\
      --out exp/eval/dev_clean_2
  vqaudio evaluate --model exp/codec/model.pt --data data/dev_clean_2 --n-q 1,2,4,8 --out exp/eval_n_q/dev_clean_2
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract-units",
        help="units for ASR / unit LMs (sharded, resumable)",
        description=EXTRACT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="a codec's model.pt (train-codec) or a k-means model (train-kmeans)")
    p.add_argument("--data", required=True, help="Kaldi data dir (wav.scp, optional segments) or lhotse cuts .jsonl.gz")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--format", default="kaldi", help="comma list of kaldi,fairseq,npy,lhotse,hf (default kaldi)")
    p.add_argument("--dedup", action="store_true", help="run-length dedup of frames (unit LMs / unit ASR)")
    p.add_argument("--n-q", type=int, help="residual levels to write (default all the codec has)")
    p.add_argument("--nj", type=int, default=1, help="number of jobs the data is split into")
    p.add_argument("--job", type=int, default=1, help="which job this is, 1..nj")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument(
        "--batch-seconds",
        type=float,
        default=200.0,
        help="audio encoded (and written) together: a codec's LSTM runs over the batch's utterances at once "
        "(default 200; memory follows it)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads for this job (default: torch's choice); on a "
        "CPU machine, N jobs x 1 thread beat 1 job x N threads",
    )
    add_pipe_timeout(p)
    p.set_defaults(func=run_extract)

    p = sub.add_parser(
        "resynth",
        help="units -> wav files + wav.scp (a codec's decoder, or a unit vocoder)",
        description=RESYNTH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="the codec that made the units (decodes with its own decoder)")
    p.add_argument("--vocoder", help="a train-vocoder model folder (instead of --model)")
    p.add_argument("--speaker", help="with --vocoder: a training speaker's id (table vocoders)")
    p.add_argument("--reference", help="with --vocoder: an audio file whose voice is used")
    p.add_argument(
        "--own-voice",
        action="store_true",
        help="with --vocoder and --data: each utterance in its speaker's voice, from another of its utterances",
    )
    p.add_argument(
        "--f0",
        choices=["source", "none"],
        help="with --vocoder: F0 of the source audio in --data, or none (default: source for an F0 vocoder "
        "when --data is given)",
    )
    p.add_argument(
        "--data",
        help="with --vocoder: Kaldi data dir or lhotse cuts .jsonl.gz of the units' source audio (--f0 source)",
    )
    p.add_argument("--units", required=True, help="OUT_DIR/units of extract-units, the dir, or a .km file")
    p.add_argument("--n-q", type=int, help="residual levels to decode (default all written)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--any-model",
        action="store_true",
        help="decode units that units.json says another model made (refused otherwise)",
    )
    p.add_argument("-f", "--force", action="store_true", help="redo the outputs of an earlier run, whatever it asked")
    p.set_defaults(func=run_resynth)

    p = sub.add_parser(
        "evaluate",
        help="score resynthesis against references, or a codec at each residual depth",
        description=EVALUATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ref", help="Kaldi data dir or lhotse cuts .jsonl.gz of the references")
    p.add_argument("--hyp", help="dir with the resynthesized wav.scp")
    p.add_argument("--model", help="a codec (model.pt or model folder) to resynthesize --data with at each --n-q")
    p.add_argument("--data", help="Kaldi data dir or lhotse cuts .jsonl.gz to resynthesize and score (with --model)")
    p.add_argument(
        "--n-q",
        help="with --model: comma list of residual depths, e.g. 1,2,4,8 (default 1, 2, 4, ... up to the codec's n_q)",
    )
    p.add_argument("--device", default="cpu", help="with --model: cpu or cuda")
    p.add_argument("--out", required=True)
    p.add_argument("--units", help="units dir, for bitrate, token rate and code usage")
    p.add_argument(
        "--asr",
        action="store_true",
        help="pocketsphinx word and character error rates (wer, cer) against REF/text, and of the references "
        "themselves (wer_reference, cer_reference: the ceiling)",
    )
    p.add_argument(
        "--speaker-sim",
        action="store_true",
        help="speaker_similarity: GE2E (Resemblyzer) cosine of each hypothesis to its speaker's other reference "
        "utterances (REF/utt2spk); for conversions (HYP/utt2target, written by convert --data) to the target's, "
        "with speaker_similarity_source, conversion_closer_to_target and conversion_margin",
    )
    p.add_argument(
        "--f0",
        action="store_true",
        help="gross_pitch_error and voicing_decision_error of the hypotheses' pYIN F0 against the references'",
    )
    add_pipe_timeout(p)
    p.set_defaults(func=run_evaluate)

    p = sub.add_parser(
        "evaluate-units",
        help="phonetic quality of units: PNMI, purity, ABX, CTC probe",
        description=EVALUATE_UNITS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--units", required=True, help="units dir written by extract-units (not --dedup)")
    p.add_argument("--alignments", required=True, help="phone CTM: utt channel start dur phone")
    p.add_argument("--out", required=True, help="output dir")
    p.add_argument("--level", type=int, default=0, help="residual level to score (default 0)")
    p.add_argument(
        "--data", help="Kaldi data dir or lhotse cuts whose utt2spk/supervisions give speakers (default: id prefix)"
    )
    p.add_argument("--probe", action="store_true", help="also train/test a CTC phone recogniser (probe_per)")
    p.add_argument(
        "--probe-train",
        help="units dir of other speakers (same model) to train the probe on; it then tests on all of --units",
    )
    p.add_argument("--seed", type=int, default=0, help="for the any-context subsample and the probe")
    p.set_defaults(func=run_evaluate_units)

    p = sub.add_parser(
        "encode",
        help="audio files, directories or globs -> codes files (.vqc, .npy, .txt)",
        description=ENCODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _file_io_options(p, "audio files, directories, globs")
    p.add_argument("--n-q", type=int, help="residual levels to keep (default all the codec has)")
    p.add_argument("--suffix", default=".vqc", choices=[".vqc", ".npy", ".txt"], help="format for directory outputs")
    p.set_defaults(func=run_encode)

    p = sub.add_parser(
        "decode",
        help="codes files, directories or globs -> audio",
        description=DECODE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _file_io_options(p, ".vqc/.npy/.txt files, directories, globs")
    p.add_argument("--suffix", default=".wav", help="audio format for directory outputs (default .wav)")
    p.add_argument("--any-model", action="store_true", help="decode .vqc files made by another model file")
    p.set_defaults(func=run_decode)
    register_export(sub)


def run_extract(args: argparse.Namespace) -> int:
    import torch

    from ..units.extract import extract_units

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    check_device(args.device)
    res = extract_units(
        args.model,
        args.data,
        args.out,
        formats=tuple(f for f in args.format.split(",") if f),
        dedup=args.dedup,
        n_q=args.n_q,
        nj=args.nj,
        job=args.job,
        device=args.device,
        batch_seconds=args.batch_seconds,
    )
    rate = res.audio_seconds / res.wall_seconds if res.wall_seconds > 0 else 0.0
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in res.stage_seconds.items())
    print(
        f"throughput: {res.audio_seconds / 3600:.3f} h of audio in {res.wall_seconds:.1f} s "
        f"= {rate:.1f} h of audio per hour ({stages})"
    )
    status = "merged into " + args.out if res.merged else "waiting for the other jobs to merge"
    print(
        f"job {args.job}/{args.nj}: {res.extracted + res.skipped} utterances extracted "
        f"({res.skipped} from an earlier run), {res.failed} failed; {status}"
    )
    return 0 if res.failed == 0 else 1


def run_evaluate_units(args: argparse.Namespace) -> int:
    from ..units.quality import evaluate_units

    evaluate_units(
        args.units,
        args.alignments,
        args.out,
        level=args.level,
        data_dir=args.data,
        probe=args.probe,
        probe_train=args.probe_train,
        seed=args.seed,
    )
    print(pathlib_read(args.out))
    return 0


def run_resynth(args: argparse.Namespace) -> int:
    from ..units.resynth import resynthesize, resynthesize_with_vocoder

    check_device(args.device)
    if (args.model is None) == (args.vocoder is None):
        raise UserError("give --model (a codec's decoder) or --vocoder (a unit vocoder), one of them")
    if args.vocoder is not None:
        if args.n_q is not None or args.any_model:
            raise UserError("--n-q and --any-model go with --model; a vocoder reads its own levels and unit model")
        scp, failed = resynthesize_with_vocoder(
            args.vocoder,
            args.units,
            args.out,
            speaker=args.speaker,
            reference=args.reference,
            f0=args.f0,
            data=args.data,
            device=args.device,
            own_voice=args.own_voice,
            force=args.force,
        )
        print(
            f"wrote {scp}" + (f"; {len(failed)} utterance(s) failed, listed in failed.txt beside it" if failed else "")
        )
        return 1 if failed else 0
    options = (("--speaker", args.speaker), ("--reference", args.reference), ("--f0", args.f0))
    given = [f for f, v in (*options, ("--own-voice", args.own_voice)) if v]
    if given or args.data is not None:
        raise UserError(f"{(given or ['--data'])[0]} goes with --vocoder, not with --model")
    scp = resynthesize(
        args.model, args.units, args.out, n_q=args.n_q, device=args.device, any_model=args.any_model, force=args.force
    )
    print(f"wrote {scp}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import evaluate, evaluate_levels

    if args.model is not None or args.data is not None:
        if args.ref is not None or args.hyp is not None:
            raise UserError("give --ref and --hyp (score a resynthesis) or --model and --data (a codec), not both")
        if args.model is None or args.data is None:
            raise UserError("--model and --data go together (resynthesize the data dir with the codec and score it)")
        given = [
            flag
            for flag, on in (
                ("--units", args.units),
                ("--asr", args.asr),
                ("--speaker-sim", args.speaker_sim),
                ("--f0", args.f0),
            )
            if on
        ]
        if given:
            raise UserError(f"{given[0]} goes with --ref and --hyp, not with --model and --data")
        n_q = None if args.n_q is None else _depths(args.n_q)
        check_device(args.device)
        evaluate_levels(args.model, args.data, args.out, n_q=n_q, device=args.device)
        print(pathlib_read(args.out))
        return 0
    if args.ref is None or args.hyp is None:
        raise UserError("evaluate needs --ref and --hyp (score a resynthesis) or --model and --data (a codec)")
    if args.n_q is not None:
        raise UserError("--n-q goes with --model and --data, not with --ref and --hyp")
    summary = evaluate(
        args.ref, args.hyp, args.out, units=args.units, asr=args.asr, speaker_sim=args.speaker_sim, f0=args.f0
    )
    print(pathlib_read(args.out))
    return 0 if summary["num_utterances"] else 1


def _depths(text: str) -> list[int]:
    """``--n-q 1,2,4,8`` -> [1, 2, 4, 8]; the range is checked against the codec."""
    try:
        depths = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--n-q takes a comma list of residual depths such as 1,2,4,8, got {text!r}") from None
    return depths


def pathlib_read(out: str) -> str:
    return (pathlib.Path(out) / "RESULTS.md").read_text()


def register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-onnx",
        help="a codec -> encoder.onnx + decoder.onnx (dynamic batch and length)",
        description="Export a codec (VQ kinds) to ONNX: OUT/encoder.onnx (wav (B, 1, T), a partial last frame "
        "zero-padded as encode pads it, -> codes (B, n_q, ceil(T / hop))), OUT/decoder.onnx (codes in [0, K) -> "
        "wav (B, 1, frames * hop)) and OUT/onnx.json "
        "(sample rate, hop, n_q, codebook size). Weight norm is folded; batch and length are dynamic. Needs "
        "pip install 'vqaudio[onnx]'.\n\nexample:\n  vqaudio export-onnx --model exp/codec/model.pt --out exp/onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="the codec: a model.pt or a model folder")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    p.add_argument("-f", "--force", action="store_true", help="overwrite the files of an earlier export in OUT")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..export import export_onnx
    from ..models.codec import Codec

    paths = export_onnx(Codec.from_pretrained(args.model), args.out, opset=args.opset, overwrite=args.force)
    print("\n".join(f"wrote {p}" for p in paths.values()))
    return 0


def _file_io_options(p: argparse.ArgumentParser, inputs: str) -> None:
    """The options encode and decode share."""
    p.add_argument("--model", required=True, help="the codec: a model.pt or a model folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=inputs)
    p.add_argument(
        "-o",
        "--out",
        help="output file (one input) or directory (several); without -o, a second argument that does not exist yet",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("-f", "--force", action="store_true", help="overwrite existing outputs (else kept, and not redone)")


def _load_codec(model: str, device: str):
    from ..models.codec import Codec

    check_device(device)
    return Codec.from_pretrained(model, map_location=device).to(device)


def _timing(s) -> str:
    return f"{s.audio_seconds:.1f} s of audio in {s.wall_seconds:.1f} s, {s.real_time_factor:.1f}x real time"


def _notes(plan, what: str) -> None:
    """Say on stderr what the plan leaves out: files of other suffixes, outputs kept from an earlier run."""
    import sys

    if plan.ignored:
        names = ", ".join(str(p) for p in plan.ignored[:3]) + (", ..." if len(plan.ignored) > 3 else "")
        print(f"note: {len(plan.ignored)} file(s) skipped, not {what} inputs by suffix: {names}", file=sys.stderr)
    if plan.kept:
        print(f"note: {len(plan.kept)} output(s) already there are kept (pass -f to redo them)", file=sys.stderr)


def _finish(s, plan, verb: str) -> int:
    """Report the failures one line each on stderr; 0 only when nothing failed (one input that failed is a
    one-line error, exit 2)."""
    import sys

    if s.failed and len(plan.jobs) == 1 and not plan.kept:
        src, reason = s.failed[0]
        raise UserError(reason if str(src) in reason else f"{src}: {reason}")
    for src, reason in s.failed:
        print(f"failed: {reason if str(src) in reason else f'{src}: {reason}'}", file=sys.stderr)
    kept = f" ({len(plan.kept)} kept from an earlier run)" if plan.kept else ""
    print(f"{verb} {s.files} file(s){kept}, {len(s.failed)} failed: {_timing(s)}")
    return 1 if s.failed else 0


def run_encode(args: argparse.Namespace) -> int:
    from ..units.files import AUDIO_SUFFIXES, CODE_SUFFIXES, encode_files, plan, split_inputs

    inputs, out = split_inputs(args.inputs, args.out)
    todo = plan(inputs, out, AUDIO_SUFFIXES, args.suffix, args.force, out_suffixes=CODE_SUFFIXES)
    _notes(todo, "encode")
    codec = _load_codec(args.model, args.device)
    if args.n_q is not None and not 1 <= args.n_q <= codec.n_q:
        raise UserError(f"--n-q must lie in [1, {codec.n_q}] for {args.model}, got {args.n_q}")
    return _finish(encode_files(codec, todo.jobs, args.n_q, args.model, args.device), todo, "encoded")


def run_decode(args: argparse.Namespace) -> int:
    from ..units.files import CODE_SUFFIXES, decode_files, plan, split_inputs

    inputs, out = split_inputs(args.inputs, args.out)
    suffix = args.suffix if args.suffix.startswith(".") else "." + args.suffix
    todo = plan(inputs, out, CODE_SUFFIXES, suffix, args.force)
    _notes(todo, "decode")
    codec = _load_codec(args.model, args.device)
    s = decode_files(codec, todo.jobs, args.model, args.device, any_model=args.any_model)
    return _finish(s, todo, "decoded")
