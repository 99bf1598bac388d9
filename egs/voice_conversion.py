"""Convert one utterance into another speaker's voice with a unit vocoder, and say how close the result is to
each voice (speaker-encoder cosine similarity, SECS) when Resemblyzer is installed.

    python egs/voice_conversion.py --vocoder exp/tiny/vocoder/model.pt --source a.flac --reference b.flac \
        [--out converted.wav] [-f] [--threads 1]

The vocoder (``vqaudio train-vocoder``, or stage 7 of recipes/librispeech/run.sh) carries its unit model:
the source's units come from it, the voice from the reference (a reference-encoder or GE2E-embedding
vocoder), and with an F0 vocoder the source's pitch contour, normalised per speaker, in the voice's range.
An existing --out is refused unless -f, and it may never be the source or the reference; bad input (a short or
silent reference, a vocoder without reference voices) is one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

import soundfile as sf
import torch

from vqaudio.data.audio import load_audio
from vqaudio.errors import UserError
from vqaudio.fileio import atomic_output
from vqaudio.models.vocoder import Vocoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocoder", required=True, help="a train-vocoder model folder (EXP/model.pt)")
    parser.add_argument("--source", required=True, help="the speech to convert (any audio file)")
    parser.add_argument("--reference", required=True, help="an utterance of the target voice (a few seconds)")
    parser.add_argument("--out", default="converted.wav")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    try:
        convert(args)
    except UserError as err:  # bad input: one line; anything else is a bug and keeps its traceback
        print(f"voice_conversion.py: error: {err}", file=sys.stderr)
        sys.exit(2)


def convert(args: argparse.Namespace) -> None:
    out = pathlib.Path(args.out)
    for option, path in (("--source", args.source), ("--reference", args.reference)):
        if out.resolve() == pathlib.Path(path).resolve():
            raise UserError(f"--out {out} is the {option}; choose another output")
    if out.exists() and not args.force:
        raise UserError(f"{out} exists; pass -f to overwrite it")
    vocoder = Vocoder.from_pretrained(args.vocoder)
    source = load_audio(args.source, vocoder.sample_rate)
    reference = load_audio(args.reference, vocoder.sample_rate)
    voice = vocoder.voice(reference, name=args.reference)  # computed once; reuse it for many sources
    converted = vocoder.convert(source, voice).numpy()
    with atomic_output(out) as tmp:
        sf.write(tmp, converted, vocoder.sample_rate, format="WAV")
    units = vocoder.encode_units(source)
    print(
        f"{args.out}: {converted.shape[0] / vocoder.sample_rate:.2f} s from {units.shape[-1]} frames of "
        f"{vocoder.config.codebook_size}-way units, {vocoder.config.speaker} speaker input, "
        f"F0 {'on' if vocoder.config.f0 else 'off'}"
    )
    if importlib.util.find_spec("resemblyzer") is None:
        print("speaker similarity needs Resemblyzer: pip install 'vqaudio[eval]'")
        return
    from vqaudio.scoring.speaker import SpeakerEncoder, conversion_similarity

    encoder = SpeakerEncoder()
    sr = vocoder.sample_rate
    try:
        target, own = encoder.embed(reference, sr, name="reference"), encoder.embed(source, sr, name="source")
        scores = conversion_similarity(encoder, converted, target, own, sr)
    except UserError as err:  # e.g. no speech left once silences are trimmed
        print(f"no speaker similarity: {err}")
        return
    print(
        f"SECS to the reference voice {scores['speaker_similarity_target']:.3f}, "
        f"to the source voice {scores['speaker_similarity_source']:.3f}"
    )


if __name__ == "__main__":
    main()
