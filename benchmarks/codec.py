"""CPU real-time factor of encode and decode: vqaudio's default codec against EnCodec 24 kHz and DAC 16 kHz.

All models randomly initialised (speed does not depend on weights), 10 s of audio, batch 1, inference
mode, 1 and 2 threads; real-time factor = audio seconds per wall-clock second (higher is faster). The
models alternate within each repeat, so drifts in machine speed affect all of them alike.

    pip install --no-deps encodec einops descript-audio-codec
    python benchmarks/codec.py [--seconds 10] [--threads 1 2] [--repeats 3]
    python benchmarks/codec.py --threads 1 --models vqaudio onnx encodec     # with onnxruntime (vqaudio[onnx])
    python benchmarks/codec.py --threads 1 --models vqaudio_seanet vqaudio_istft onnx_istft encodec   # decoders
    python benchmarks/codec.py --threads 1 --models vqaudio_seanet_encoder vqaudio_mel onnx_mel encodec  # encoders

EnCodec and DAC import torchaudio / audiotools only for file helpers: empty modules stand in for them
here (see ../shared/environment.md), the models themselves are the published architectures.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import types

import torch
from torch import nn


def stub_imports() -> None:
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    audiotools = types.ModuleType("audiotools")
    audiotools.AudioSignal = object
    ml = types.ModuleType("audiotools.ml")
    ml.BaseModel = type("BaseModel", (nn.Module,), {"INTERN": [], "EXTERN": []})
    audiotools.ml = ml
    sys.modules.setdefault("audiotools", audiotools)
    sys.modules.setdefault("audiotools.ml", ml)
    sys.modules.setdefault("argbind", types.ModuleType("argbind"))


# vqaudio's codec variants: CodecConfig overrides of the default, and how the table names them
VARIANTS = {
    "": {},
    "_seanet": {"decoder": "seanet", "decoder_lstm": True},  # SEANet decoder with its LSTM
    "_istft": {"decoder": "istft", "decoder_lstm": False},  # iSTFT decoder, no decoder-side LSTM
    "_seanet_encoder": {"encoder": "seanet"},  # the SEANet encoder (strided convs over the waveform)
    "_mel": {"encoder": "mel"},  # the frame-rate mel encoder
}
NAMES = {
    "_seanet": "SEANet decoder",
    "_istft": "iSTFT decoder",
    "_seanet_encoder": "SEANet encoder",
    "_mel": "mel encoder",
}


def vqaudio_model(variant: str = ""):
    from vqaudio import Codec
    from vqaudio.models import CodecConfig

    codec = Codec(CodecConfig(**VARIANTS[variant])).eval()
    return {
        "name": f"vqaudio default{', ' + NAMES[variant] if variant else ''} (16 kHz, 8x1024 RVQ)",
        "sr": codec.sample_rate,
        "params": sum(p.numel() for p in codec.parameters()),
        "tokens_per_s": codec.frame_rate * codec.n_q,
        "kbps": codec.bitrate / 1000,
        "encode": lambda wav: codec.encode(wav),
        "decode": lambda idx: codec.decode(idx),
    }


def onnx_model(variant: str = ""):
    """The codec exported with `vqaudio export-onnx`, run by onnxruntime with torch's thread count."""
    import tempfile

    import numpy as np
    import onnxruntime as ort

    from vqaudio import Codec
    from vqaudio.export import export_onnx
    from vqaudio.models import CodecConfig

    codec = Codec(CodecConfig(**VARIANTS[variant])).eval()
    paths = export_onnx(codec, tempfile.mkdtemp())
    sessions = {}

    def run(name: str, feed: dict):
        key = (name, torch.get_num_threads())
        if key not in sessions:
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = key[1], 1
            sessions[key] = ort.InferenceSession(str(paths[name]), options)
        return sessions[key].run(None, feed)[0]

    return {
        "name": f"vqaudio default{', ' + NAMES[variant] if variant else ''}, onnxruntime",
        "sr": codec.sample_rate,
        "params": sum(p.numel() for p in codec.parameters()),
        "tokens_per_s": codec.frame_rate * codec.n_q,
        "kbps": codec.bitrate / 1000,
        "encode": lambda wav: run("encoder", {"wav": np.asarray(wav)}),
        "decode": lambda codes: run("decoder", {"codes": np.asarray(codes)}),
    }


def encodec_model():
    stub_imports()
    import encodec

    model = encodec.EncodecModel.encodec_model_24khz(pretrained=False).eval()
    model.set_target_bandwidth(6.0)
    return {
        "name": "EnCodec 24 kHz (6 kbps, 8 codebooks)",
        "sr": model.sample_rate,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": 75 * 8,
        "kbps": 6.0,
        "encode": lambda wav: model.encode(wav),
        "decode": lambda frames: model.decode(frames),
    }


def import_dac():
    """The ``dac.model.dac`` module (``DAC``, ``Encoder``, ``Decoder``) of descript-audio-codec."""
    stub_imports()
    import importlib
    import importlib.util

    # Import the model modules only: the package __init__ files pull in training and file utilities.
    root = importlib.util.find_spec("dac").submodule_search_locations[0]
    for name, sub in (("dac", ""), ("dac.nn", "/nn"), ("dac.model", "/model")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [root + sub]
        sys.modules.setdefault(name, pkg)
    return importlib.import_module("dac.model.dac")


def dac_model():
    DAC = import_dac().DAC

    model = DAC(
        encoder_dim=64,
        encoder_rates=[2, 4, 5, 8],
        decoder_dim=1536,
        decoder_rates=[8, 5, 4, 2],
        n_codebooks=12,
        codebook_size=1024,
        codebook_dim=8,
        sample_rate=16000,
    ).eval()

    def encode(wav):
        z = model.encoder(wav)
        return model.quantizer(z)[1]

    return {
        "name": "DAC 16 kHz (6 kbps, 12 codebooks)",
        "sr": 16000,
        "params": sum(p.numel() for p in model.parameters()),
        "tokens_per_s": 50 * 12,
        "kbps": 6.0,
        "encode": encode,
        "decode": lambda codes: model.decoder(model.quantizer.from_codes(codes)[0]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--models",
        nargs="+",
        default=["vqaudio", "encodec", "dac"],
        help="vqaudio, vqaudio_VARIANT, onnx, onnx_VARIANT (VARIANT: seanet, istft, seanet_encoder, mel), encodec, dac",
    )
    args = parser.parse_args()
    builders = {"encodec": encodec_model, "dac": dac_model}
    for variant in VARIANTS:
        builders["vqaudio" + variant] = functools.partial(vqaudio_model, variant)
        builders["onnx" + variant] = functools.partial(onnx_model, variant)
    models = []
    for key in args.models:
        torch.manual_seed(0)
        m = builders[key]()
        m["wav"] = torch.randn(1, 1, int(args.seconds * m["sr"])) * 0.1
        with torch.inference_mode():
            m["codes"] = m["encode"](m["wav"])
        models.append(m)
    print(f"{args.seconds:g} s of audio, batch 1; RTF = audio seconds per wall second (best of {args.repeats});")
    print("models alternate within each repeat, so drifts in machine speed hit all of them alike")
    print(f"{'model':40} {'params':>8} {'kbps':>5} {'tok/s':>6} {'thr':>3} {'encode RTF':>10} {'decode RTF':>10}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        best = {id(m): [float("inf"), float("inf")] for m in models}
        with torch.inference_mode():
            for m in models:  # warm-up
                m["decode"](m["encode"](m["wav"]))
            for _ in range(args.repeats):
                for m in models:
                    for j, (fn, arg) in enumerate(((m["encode"], m["wav"]), (m["decode"], m["codes"]))):
                        t0 = time.perf_counter()
                        fn(arg)
                        best[id(m)][j] = min(best[id(m)][j], time.perf_counter() - t0)
        for m in models:
            enc, dec = (args.seconds / t for t in best[id(m)])
            print(
                f"{m['name']:40} {m['params'] / 1e6:7.1f}M {m['kbps']:5.1f} {m['tokens_per_s']:6.0f} {threads:3d} "
                f"{enc:10.1f} {dec:10.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
