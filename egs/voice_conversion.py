"""Convert one utterance into another speaker's voice with a unit vocoder, and say how close the result is to
each voice (speaker-encoder cosine similarity, SECS) when Resemblyzer is installed.

    python egs/voice_conversion.py --vocoder exp/tiny/vocoder/model.pt --source a.flac --reference b.flac \
        [--out converted.wav] [--threads 1]

The vocoder (``vqaudio train-vocoder``, or stage 7 of recipes/librispeech/run.sh) carries its unit model:
the source's units come from it, the voice from the reference (a reference-encoder or GE2E-embedding
vocoder), and with an F0 vocoder the source's pitch contour, normalised per speaker, in the voice's range.
"""

from __future__ import annotations

import argparse
import importlib.util

import soundfile as sf
import torch

from vqaudio.data.audio import load_audio
from vqaudio.errors import UserError
from vqaudio.models.vocoder import Vocoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocoder", required=True, help="a train-vocoder model folder (EXP/model.pt)")
    parser.add_argument("--source", required=True, help="the speech to convert (any audio file)")
    parser.add_argument("--reference", required=True, help="an utterance of the target voice (a few seconds)")
    parser.add_argument("--out", default="converted.wav")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    vocoder = Vocoder.from_pretrained(args.vocoder)
    source = load_audio(args.source, vocoder.sample_rate)
    reference = load_audio(args.reference, vocoder.sample_rate)
    voice = vocoder.voice(reference)  # computed once; reuse it for many sources
    converted = vocoder.convert(source, voice).numpy()
    sf.write(args.out, converted, vocoder.sample_rate)
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
