"""Unit models: anything that turns a waveform into units with the codec's unit interface."""

from __future__ import annotations

import pathlib

import torch

from ..checkpoint import model_id, read_model
from ..errors import UserError
from ..models.codec import Codec
from .kmeans import KMeansUnitModel

UnitModel = Codec | KMeansUnitModel


def load_unit_model(path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> UnitModel:
    """A codec (``train-codec``'s ``model.pt``) or a k-means unit model (``train-kmeans``'s file)."""
    return load_unit_model_and_id(path, map_location)[0]


def load_unit_model_and_id(path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> tuple[UnitModel, str]:
    """:func:`load_unit_model` and the model's :func:`~vqaudio.checkpoint.model_checksum`, from one read."""
    kind, config, state = read_model(path, ("codec", "kmeans"), map_location)  # one read, whichever it is
    try:
        model = Codec.from_saved(config, state) if kind == "codec" else KMeansUnitModel.from_saved(config, state)
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    return model, model_id(kind, config, state)
