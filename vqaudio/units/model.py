"""Unit models: anything that turns a waveform into units with the codec's unit interface."""

from __future__ import annotations

import pathlib

import torch

from ..checkpoint import model_kind
from ..errors import UserError
from ..models.codec import Codec
from .kmeans import KMeansUnitModel

UnitModel = Codec | KMeansUnitModel


def load_unit_model(path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> UnitModel:
    """A codec (``train-codec``'s ``model.pt``) or a k-means unit model (``train-kmeans``'s file)."""
    kind = model_kind(path)
    if kind == "codec":
        return Codec.from_pretrained(path, map_location=map_location)
    if kind == "kmeans":
        return KMeansUnitModel.from_pretrained(path, map_location=map_location)
    raise UserError(f"{path}: a vqaudio {kind} file makes no units; pass a codec or a k-means unit model")
