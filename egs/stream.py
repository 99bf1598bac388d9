"""Stream a file through a causal codec in 20 ms steps: encode one step, decode it, and report the latency
per step and the real-time factor (audio seconds per wall second).

    python egs/stream.py [--model exp/causal/model.pt] [--input speech.flac] [--step-ms 20] [--threads 1]

Without --model, a randomly initialised codec of recipes/librispeech/conf/codec_causal_tiny.yaml's
architecture streams (speed does not depend on the weights); without --input, a file of speech-mini.
The output equals the codec's offline encode + decode of the whole file (checked at the end).
"""

from __future__ import annotations

import argparse
import pathlib
import time

import numpy as np
import torch
import yaml

from vqaudio import Codec, CodecConfig
from vqaudio.config import from_dict
from vqaudio.data.audio import AudioError, load_audio

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "speech-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a causal codec's model.pt or model folder")
    parser.add_argument("--config", default=str(ROOT / "recipes/librispeech/conf/codec_causal_tiny.yaml"))
    parser.add_argument("--input", help="audio file (default: a speech-mini file)")
    parser.add_argument("--step-ms", type=float, default=20.0, help="audio per step, a whole number of hops")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        codec = Codec.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        codec = Codec(from_dict(CodecConfig, yaml.safe_load(open(args.config))["model"], where=args.config)).eval()
    source = args.input or next(iter(sorted(CORPUS.rglob("*.flac"))), None)
    if source is None:
        raise SystemExit(f"no --input and no speech-mini at {CORPUS}")
    try:
        wav = load_audio(str(source), codec.sample_rate)
    except AudioError as err:
        raise SystemExit(f"{source}: {err}") from None
    if wav.shape[0] == 0:
        raise SystemExit(f"{source}: no samples to stream")
    hop = codec.hop_length
    step = max(1, round(args.step_ms / 1000 * codec.sample_rate / hop)) * hop
    wav = np.pad(wav, (0, -len(wav) % step))
    x = torch.from_numpy(wav)[None, None]
    enc_times, dec_times, codes, out = [], [], [], []
    if not codec.config.causal:
        raise SystemExit(f"{args.model or args.config}: not a causal codec (model.causal: false); it cannot stream")
    with codec.streaming() as stream:
        for start in range(0, x.shape[-1], step):
            t0 = time.perf_counter()
            c = stream.encode(x[..., start : start + step])
            t1 = time.perf_counter()
            out.append(stream.decode(c))
            t2 = time.perf_counter()
            codes.append(c)
            enc_times.append(t1 - t0)
            dec_times.append(t2 - t1)
    step_s = step / codec.sample_rate
    streamed = torch.cat(out, -1)
    offline = codec.decode(codec.encode(x))
    seconds = x.shape[-1] / codec.sample_rate
    print(f"{source}: {seconds:.2f} s in steps of {1000 * step_s:.0f} ms, {args.threads} thread(s)")
    for name, times in (("encode", enc_times), ("decode", dec_times)):
        t = np.array(times) * 1000
        print(
            f"{name}: median {np.median(t):.2f} ms, p95 {np.percentile(t, 95):.2f} ms per step; "
            f"real-time factor {1000 * step_s / np.mean(t):.1f}"
        )
    print(
        f"algorithmic latency: {1000 * step_s:.0f} ms (one step); max |streamed - offline| = "
        f"{(streamed - offline).abs().max():.2e}, codes equal: {torch.equal(torch.cat(codes, -1), codec.encode(x))}"
    )


if __name__ == "__main__":
    main()
