"""``vqaudio train-vocoder`` and ``vqaudio convert``."""

from __future__ import annotations

import argparse

from .options import add_pipe_timeout, add_training_options, check_device, trainer_overrides

TRAIN_HELP = """Train a unit vocoder: units of any unit model (a codec's levels, k-means units) + a speaker
(+ F0) -> audio, with the codec's decoder, discriminators and losses (Lightning, resumable, DDP).

Inputs: --units (extract-units' dir or a .km), --data (the Kaldi data dir of the same utterances' audio;
utt2spk gives the speakers, else the utterance id's prefix before '-'), --unit-model (the model that made
the units: units.json must name it; the vocoder refuses units of any other). Without --valid-units and
--valid-data, data.holdout training utterances are held out for validation.

The speaker input is model.speaker in the config: table (training speakers by id), reference (a reference
encoder over a reference utterance's mel frames: any voice), external (a Kaldi-style table of embeddings,
data.speaker_embeddings: 'utt_or_spk v1 v2 ...'; without one, Resemblyzer GE2E speaker embeddings are
computed into EXP/speaker_embeddings.txt, which needs pip install 'vqaudio[eval]') or none. model.f0:
true adds speaker-normalised, quantised log-F0 (pYIN, cached per utterance in EXP/f0_cache).

The experiment dir receives config.yaml, log/train.log, TensorBoard events under tb/, checkpoints/
{last,best}.ckpt and model.pt: a model folder (config.json, model.safetensors, and the unit model in
unit_model/) that `vqaudio resynth --vocoder` and `vqaudio convert` take alone.

examples:
  vqaudio train-vocoder --config conf/vocoder_tiny.yaml --units exp/units/train_clean_5 \\
      --data data/train_clean_5 --unit-model exp/km/mfcc256.pt --exp-dir exp/vocoder_km
  vqaudio train-vocoder --config conf/vocoder_base.yaml --units exp/units/train_960 --data data/train_960 \\
      --unit-model exp/codec/model.pt --levels 0 --valid-units exp/units/dev_clean \\
      --valid-data data/dev_clean --exp-dir exp/vocoder_l0
  vqaudio train-vocoder --config conf/vocoder_tiny.yaml --units exp/units/train_clean_5 \\
      --data data/train_clean_5 --unit-model exp/codec/model.pt --init-decoder exp/codec/model.pt \\
      --exp-dir exp/vocoder_l0      # the decoder starts as the codec's (a head start on small budgets)
  vqaudio train-vocoder --units exp/units/train_clean_5 --data data/train_clean_5 \\
      --unit-model exp/km/mfcc256.pt --exp-dir exp/vocoder_km --resume      # continue after a kill
"""

CONVERT_HELP = """Voice conversion with a unit vocoder: each source utterance's units (from the vocoder's own unit
model), spoken in the voice of --reference (or of a training speaker, --speaker, for vocoders with a
speaker table); an F0 vocoder keeps the source's pitch contour (normalised by the source's own
statistics), and the voice sets its level and range.

--source is one audio file (then -o is the output file) or a directory (searched recursively; -o is a
directory where each file keeps its relative path, as .wav). --data D --pairs FILE converts utterances
of a Kaldi data dir, each into the voice of another of its utterances (a line 'utt reference_utt' per
conversion): -o is a directory that receives <utt>.wav, wav.scp, utt2target (the reference's speaker)
and utt2reference, which `vqaudio evaluate --ref D --hyp OUT --speaker-sim --asr` scores as conversions.
An output directory records what was asked in OUT/request.json (the vocoder, the voice, the sources, the
pairs): a rerun of the same request resumes (outputs already there are kept), another request is refused
in one line naming what differs (-f redoes every output); an output that is an input (the data dir, the
source, the reference) is refused. Each file is written whole or not at all, and a source that fails is
reported in one line while the others are converted (exit status 1). A reference that is too short or
silent is refused before anything is written.

examples:
  vqaudio convert --vocoder exp/vocoder_l0/model.pt --source source.wav --reference target_voice.flac -o out.wav
  vqaudio convert --vocoder exp/vocoder_l0/model.pt --source data/dev_wavs --reference target.flac -o exp/converted
  vqaudio convert --vocoder exp/vocoder_km/model.pt --source source.wav --speaker 1272 -o out.wav
  vqaudio convert --vocoder exp/vocoder_l0/model.pt --data data/dev_clean_2 --pairs exp/convert/pairs \
      -o exp/convert/dev_clean_2
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-vocoder",
        help="train a unit vocoder (units + speaker [+ F0] -> audio; Lightning; GAN; DDP)",
        description=TRAIN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML config (recipes/librispeech/conf/vocoder_*.yaml); defaults when omitted")
    p.add_argument("--units", required=True, help="units dir of extract-units (or a .km) for training")
    p.add_argument(
        "--data", required=True, help="Kaldi data dir (wav.scp, utt2spk) or lhotse cuts .jsonl.gz with the units' audio"
    )
    p.add_argument("--unit-model", required=True, help="the unit model that made the units (codec or k-means)")
    p.add_argument("--exp-dir", required=True, help="experiment dir (created)")
    p.add_argument("--valid-units", help="units dir for validation (with --valid-data)")
    p.add_argument("--valid-data", help="Kaldi data dir or lhotse cuts .jsonl.gz of the validation units' audio")
    p.add_argument("--levels", help="residual levels of the units to read, e.g. 0 or 0,1 (sets model.levels)")
    p.add_argument(
        "--init-decoder",
        metavar="CODEC",
        help="start the vocoder's decoder from this codec's decoder (its kind, shape and weights; sets init_decoder)",
    )
    add_training_options(p, "trainer.max_steps (vocoder updates)")
    add_pipe_timeout(p)
    p.set_defaults(func=run_train)

    p = sub.add_parser(
        "convert",
        help="voice conversion: source audio in a reference's voice, through a unit vocoder",
        description=CONVERT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--vocoder", required=True, help="a train-vocoder model folder (EXP/model.pt)")
    p.add_argument("--source", help="an audio file or a directory of audio files")
    voice = p.add_mutually_exclusive_group()
    voice.add_argument("--reference", help="an audio file of the target voice")
    voice.add_argument("--speaker", help="a training speaker's id (vocoders with a speaker table)")
    p.add_argument("--data", help="a Kaldi data dir or lhotse cuts whose utterances --pairs converts (not --source)")
    p.add_argument("--pairs", help="with --data: a file of 'utt reference_utt' lines, both utterances of --data")
    p.add_argument("-o", "--out", required=True, help="output file (one source file) or directory")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("-f", "--force", action="store_true", help="redo outputs already there (else kept)")
    p.set_defaults(func=run_convert)


def run_train(args: argparse.Namespace) -> int:
    from ..train.run_vocoder import parse_levels, train_vocoder

    model = train_vocoder(
        args.config,
        args.units,
        args.data,
        args.unit_model,
        args.exp_dir,
        valid_units=args.valid_units,
        valid_data=args.valid_data,
        levels=parse_levels(args.levels),
        init_decoder=args.init_decoder,
        resume=args.resume,
        overrides=trainer_overrides(args),
        allow_config_change=args.allow_config_change,
    )
    print(f"vocoder written to {model}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    import pathlib
    import sys

    import soundfile as sf
    from tqdm import tqdm

    from ..data.audio import load_audio
    from ..errors import UserError
    from ..fileio import atomic_output, file_sha256
    from ..models.vocoder import Vocoder
    from ..outdir import claim_output_dir
    from ..units.files import AUDIO_SUFFIXES, plan

    check_device(args.device)
    if args.data is not None or args.pairs is not None:
        return _convert_pairs(args)
    if args.source is None or (args.reference is None and args.speaker is None):
        raise UserError("give --source with --reference or --speaker, or --data with --pairs")
    vocoder = Vocoder.from_pretrained(args.vocoder, map_location=args.device).to(args.device)
    vocoder.unit_model()  # a unit model that cannot serve: one line, not one per source
    if args.reference is not None:
        voice = vocoder.voice(load_audio(args.reference, vocoder.sample_rate), name=args.reference)
    else:
        vocoder.speaker_index(args.speaker)  # an unknown id: one line listing the known ones, before any output
    out = pathlib.Path(args.out)
    single = pathlib.Path(args.source).is_file() and out.suffix and not out.is_dir()
    todo = plan([args.source], args.out, AUDIO_SUFFIXES, ".wav", args.force and single)
    jobs = [*todo.jobs, *todo.kept]
    if args.reference is not None and any(j.dst.resolve() == pathlib.Path(args.reference).resolve() for j in jobs):
        raise UserError(f"{args.out}: is the reference; choose another output")
    if not single:
        voice_id = (
            f"reference sha256:{file_sha256(args.reference)[:16]}" if args.reference else f"speaker {args.speaker}"
        )
        request = {"vocoder": vocoder.checksum, "voice": voice_id, "source": str(pathlib.Path(args.source).resolve())}
        inputs = {"--source": args.source, "--reference": args.reference, "--vocoder": args.vocoder}
        dsts = [j.dst for j in jobs]
        if claim_output_dir(args.out, "convert --source", request, dsts, inputs, args.force):
            todo.jobs, todo.kept = jobs, []
    failed = []
    for job in tqdm(todo.jobs, desc="convert", unit="file", disable=len(todo.jobs) < 2):
        try:
            source = load_audio(str(job.src), vocoder.sample_rate)
            wav = vocoder.convert(source, voice) if args.reference else vocoder.convert(source, speaker=args.speaker)
        except UserError as err:
            failed.append(str(err) if str(job.src) in str(err) else f"{job.src}: {err}")
            continue
        with atomic_output(job.dst) as tmp:
            sf.write(tmp, wav.numpy(), vocoder.sample_rate, format="WAV", subtype="PCM_16")
    if failed and len(todo.jobs) == 1 and not todo.kept:
        raise UserError(failed[0])
    for line in failed:
        print(f"failed: {line}", file=sys.stderr)
    kept = f" ({len(todo.kept)} kept from an earlier run)" if todo.kept else ""
    print(f"converted {len(todo.jobs) - len(failed)} file(s){kept}, {len(failed)} failed, into {args.out}")
    return 1 if failed else 0


def _convert_pairs(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..units.resynth import convert_data_dir

    if args.data is None or args.pairs is None:
        raise UserError("--data and --pairs go together: the data dir's utterances and the conversions")
    if args.source is not None or args.reference is not None or args.speaker is not None:
        raise UserError("--data/--pairs name sources and references themselves; drop --source, --reference, --speaker")
    scp, failed = convert_data_dir(args.vocoder, args.data, args.pairs, args.out, device=args.device, force=args.force)
    print(f"wrote {scp}" + (f"; {len(failed)} utterance(s) failed, listed in failed.txt beside it" if failed else ""))
    return 1 if failed else 0
