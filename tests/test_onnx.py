"""ONNX export: onnxruntime gives the torch codes and waveforms on several lengths and batch sizes, from
one export with dynamic shapes (runs where the onnx extra is installed: the dev environment has it)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqaudio.cli.main import main
from vqaudio.errors import UserError
from vqaudio.models import Codec, CodecConfig
from vqaudio.quantize import QuantizerConfig

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


@pytest.mark.parametrize(
    "lstm,lstm_dim,decoder,encoder",
    [
        (0, None, "seanet", "seanet"),
        (2, None, "seanet", "seanet"),
        (2, 24, "seanet", "seanet"),
        (0, None, "istft", "seanet"),
        (2, 24, "istft", "seanet"),
        (2, None, "istft", "mel"),
    ],
)
def test_onnx_encoder_and_decoder_match_torch(tmp_path, lstm, lstm_dim, decoder, encoder):
    torch.manual_seed(0)
    q = QuantizerConfig(kind="ema", n_q=3, codebook_size=64, kmeans_init=False, normalize_first=True)
    cfg = CodecConfig(
        channels=4,
        encoder_channels=4,
        latent_dim=16,
        max_channels=32,
        activation="snake",
        quantizer=q,
        lstm=lstm,
        lstm_dim=lstm_dim,
        decoder=decoder,
        decoder_lstm=True,
        decoder_dim=24,
        decoder_blocks=2,
        encoder=encoder,
        encoder_dim=24,
        encoder_blocks=2,
    )
    codec = Codec(cfg).eval()
    with torch.no_grad():  # non-trivial weight norm gains, biases and layer scales
        for name, p in codec.named_parameters():
            if "original0" in name or name.endswith("bias") or name.endswith("gamma"):
                p.add_(torch.randn_like(p) * 0.1)
    model = codec.save_pretrained(tmp_path / "codec")
    assert main(["export-onnx", "--model", str(model), "--out", str(tmp_path / "onnx")]) == 0
    info = json.loads((tmp_path / "onnx" / "onnx.json").read_text())
    assert info == {"sample_rate": 16000, "hop_length": 320, "n_q": 3, "codebook_size": 64}
    enc = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    dec = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    for batch, frames in ((1, 3), (2, 17), (3, 50)):
        wav = torch.randn(batch, 1, frames * 320) * 0.1
        codes = codec.encode(wav)
        got = enc.run(None, {"wav": wav.numpy()})[0]
        assert got.shape == (batch, 3, frames) and (got == codes.numpy()).mean() > 0.999
        out, ref = dec.run(None, {"codes": codes.numpy()})[0], codec.decode(codes).numpy()
        assert np.abs(ref).max() > 1e-3 and np.abs(out - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())
    assert Codec.from_pretrained(model).encode(wav).shape == codes.shape  # the saved model is untouched


def test_fsq_codecs_say_they_cannot_export(tmp_path):
    from vqaudio.export import export_onnx

    torch.manual_seed(0)
    q = QuantizerConfig(kind="fsq", n_q=1)
    codec = Codec(
        CodecConfig(
            encoder="seanet", channels=4, encoder_channels=4, latent_dim=16, max_channels=32, quantizer=q, lstm=0
        )
    )
    with pytest.raises(UserError, match="FSQ"):
        export_onnx(codec, tmp_path)
