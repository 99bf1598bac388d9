"""ONNX export of a codec: ``encoder.onnx`` (waveform -> codes) and ``decoder.onnx`` (codes -> waveform),
both with dynamic batch and length, weight norm folded into plain weights.

The exported graphs run the layers' ``forward`` (not the CPU fast path) and a nearest-code search written
for export (one matmul and an argmin per residual level, as the quantizers compute it). The encoder takes
``(B, 1, T)`` and zero-pads a partial last frame as ``Codec.encode`` does (``ceil(T / hop)`` frames); the
decoder returns ``(B, 1, frames * hop)`` and refuses codes outside ``[0, K)``. Needs
``pip install vqaudio[onnx]`` (onnx, onnxscript; onnxruntime to run).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import pathlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError
from .fileio import atomic_output, atomic_write_text, make_dirs
from .models.layers import PaddedConvTranspose1d
from .quantize import FSQ, ResidualQuantizer, VectorQuantizer

log = logging.getLogger(__name__)


class _ExportConvTranspose(PaddedConvTranspose1d):
    """The same layer through ``F.conv_transpose1d`` (the GEMM + overlap-add form writes into slices)."""

    def forward(self, x: Tensor) -> Tensor:
        y = F.conv_transpose1d(x, self.conv.weight, self.conv.bias, stride=self.conv.stride[0])
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]


def plain_codec(codec):
    """The same codec without weight norm: each normed weight replaced by the weight it computes.

    (``remove_parametrizations`` on a deep copy would edit the parametrized class that the copy shares with
    the original, and break the original; a fresh codec built with ``weight_norm=False`` shares nothing.)
    """
    plain = type(codec)(dataclasses.replace(codec.config, weight_norm=False)).eval()
    source, modules = codec.state_dict(), dict(codec.named_modules())
    state = {}
    for key in plain.state_dict():
        path, _, leaf = key.rpartition(".")
        state[key] = source[key] if key in source else getattr(modules[path], leaf).detach()
    plain.load_state_dict(state)
    for net in (plain.encoder.net, plain.decoder.net):
        for module in net.modules():
            if type(module) is PaddedConvTranspose1d:
                module.__class__ = _ExportConvTranspose
    return plain.float()


def _stages(quantizer: nn.Module) -> tuple[list[VectorQuantizer], bool]:
    stages = list(quantizer.stages) if isinstance(quantizer, ResidualQuantizer) else [quantizer]
    if any(isinstance(s, FSQ) or not isinstance(s, VectorQuantizer) for s in stages):
        raise UserError("ONNX export supports the VQ kinds (vq, ema); this codec quantizes with FSQ")
    return stages, bool(getattr(quantizer, "normalize_first", False))


class EncoderGraph(nn.Module):
    """``(B, 1, T)`` waveform, ``T`` a multiple of the hop -> ``(B, n_q, T / hop)`` int64 codes."""

    def __init__(self, codec) -> None:
        super().__init__()
        plain = plain_codec(codec)
        self.net, self.lstm = plain.encoder.net, plain.encoder_lstm
        stages, self.normalize_first = _stages(codec.quantizer)
        self.stages = nn.ModuleList(copy.deepcopy(s).float().eval() for s in stages)

        self.hop = codec.hop_length

    def forward(self, wav: Tensor) -> Tensor:
        # A partial last frame is zero-padded to a whole hop, as Codec.encode pads it (frames = ceil(T / hop)).
        frames = (wav.shape[-1] + self.hop - 1) // self.hop
        wav = F.pad(wav, (0, self.hop - 1))[..., : frames * self.hop]
        residual = self.net(wav)  # (B, D, T')
        if self.lstm is not None:
            residual = self.lstm(residual)
        codes = []
        for i, stage in enumerate(self.stages):
            z = residual
            if i == 0 and self.normalize_first:
                z = (z - z.mean(-1, keepdim=True)) / (z.var(-1, keepdim=True, unbiased=False) + 1e-5).sqrt()
            x = stage.project_in(z.transpose(1, 2))  # (B, T', Dc)
            book = stage.codes()  # (K, Dc)
            if stage.cosine:
                index = torch.argmax(F.normalize(x, dim=-1) @ book.t(), dim=-1)
            else:
                index = torch.argmin(book.pow(2).sum(-1) - 2 * (x @ book.t()), dim=-1)
            codes.append(index)
            residual = residual - stage.project_out(book[index]).transpose(1, 2)
        return torch.stack(codes, dim=1)


class DecoderGraph(nn.Module):
    """``(B, n_q, T')`` int64 codes -> ``(B, 1, T' * hop)`` waveform."""

    def __init__(self, codec) -> None:
        super().__init__()
        plain = plain_codec(codec)
        self.net, self.lstm = plain.decoder.net, plain.decoder_lstm
        stages, _ = _stages(codec.quantizer)
        self.stages = nn.ModuleList(copy.deepcopy(s).float().eval() for s in stages)

    def forward(self, codes: Tensor) -> Tensor:
        latents = 0
        for i, stage in enumerate(self.stages):
            book = stage.codes()
            index = codes[:, i]
            # ONNX's Gather takes a negative index from the end; one past the end is refused ("invalid index"),
            # as codes >= K are, so a negative code is refused rather than decoded as another codeword.
            index = torch.where(index < 0, torch.full_like(index, book.shape[0]), index)
            latents = latents + stage.project_out(book[index]).transpose(1, 2)
        return self.net(latents if self.lstm is None else self.lstm(latents))


# The opsets each exporter writes: torch.export's (dynamo) starts at 18; the TorchScript exporter (codecs with
# LSTMs) at 9, the first with the ops the graphs use; both end at what the installed onnx knows.
MIN_OPSET = {"dynamo": 18, "torchscript": 9}
PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export needs (onnxruntime only runs the files)


def export_onnx(
    codec, out_dir: str | pathlib.Path, opset: int = 18, overwrite: bool = False
) -> dict[str, pathlib.Path]:
    """Write ``out_dir/encoder.onnx``, ``decoder.onnx`` and ``onnx.json`` (sample rate, hop, n_q, codebook size),
    each atomically. Missing packages, an opset the exporter cannot write, an output that cannot be made and
    existing files (unless ``overwrite``) are refused before anything is written."""
    import importlib.util

    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(f"ONNX export needs {', '.join(missing)}: pip install 'vqaudio[onnx]'")
    import onnx

    exporter = "torchscript" if codec.config.lstm else "dynamo"
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET[exporter] <= opset <= newest:
        raise UserError(
            f"--opset {opset}: this codec's exporter ({exporter}) writes opsets {MIN_OPSET[exporter]} to {newest}"
        )
    _stages(codec.quantizer)  # an FSQ codec is refused before the output exists
    out = pathlib.Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory")
    paths = {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}
    there = [str(p) for p in (*paths.values(), out / "onnx.json") if p.exists()]
    if there and not overwrite:
        raise UserError(f"{there[0]} exists; pass -f/--force to overwrite")
    make_dirs(out)
    hop, n_q = codec.hop_length, codec.n_q
    batch, frames = torch.export.Dim("batch", min=1), torch.export.Dim("frames", min=2)
    samples = torch.export.Dim("samples", min=2 * hop)
    wav = torch.zeros(2, 1, 8 * hop + hop // 2)
    codes = torch.zeros(2, n_q, 8, dtype=torch.long)
    graphs = {
        "encoder": (EncoderGraph(codec), (wav,), {"wav": {0: batch, 2: samples}}, ["wav"], ["codes"]),
        "decoder": (DecoderGraph(codec), (codes,), {"codes": {0: batch, 2: frames}}, ["codes"], ["wav"]),
    }
    for name, (graph, args, shapes, inputs, outputs) in graphs.items():
        with torch.no_grad(), atomic_output(paths[name]) as tmp:
            if exporter == "torchscript":
                # torch.export unrolls nn.LSTM over the example's frames, fixing the length; the TorchScript
                # exporter writes ONNX's LSTM op, whose length stays dynamic
                axes = {inputs[0]: {0: "batch", 2: "time"}, outputs[0]: {0: "batch", 2: "time"}}
                torch.onnx.export(
                    graph.eval(),
                    args,
                    str(tmp),
                    input_names=inputs,
                    output_names=outputs,
                    dynamic_axes=axes,
                    opset_version=opset,
                    dynamo=False,
                )
            else:
                program = torch.onnx.export(
                    graph.eval(),
                    args,
                    dynamic_shapes=shapes,
                    input_names=inputs,
                    output_names=outputs,
                    opset_version=opset,
                    dynamo=True,
                )
                program.save(str(tmp))
            written = _opset(onnx.load(str(tmp), load_external_data=False))
            if written != opset:
                raise UserError(f"--opset {opset}: the exporter wrote opset {written}; choose opset {written}")
        log.info("wrote %s", paths[name])
    info = {"sample_rate": codec.sample_rate, "hop_length": hop, "n_q": n_q, "codebook_size": codec.codebook_size}
    atomic_write_text(out / "onnx.json", json.dumps(info, indent=2) + "\n")
    return paths


def _opset(model) -> int | None:
    """The default-domain opset of an ONNX model."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
