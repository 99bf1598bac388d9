"""One checkpoint format for every model kind: a torch file holding a format tag, a version, the config and
the weights, loaded with ``weights_only=True`` so no pickled code ever runs."""

from __future__ import annotations

import hashlib
import pathlib

import torch
from torch import nn

from ._version import __version__
from .errors import UserError
from .fileio import atomic_output

# The version this vqaudio writes. 2: residual depth is called ``n_q`` in every config (1 said
# ``num_quantizers`` / ``num_levels``; such files still load, their configs read through the renames).
VERSION = 2


def save_model(path: str | pathlib.Path, kind: str, config: dict, model: nn.Module) -> pathlib.Path:
    """Write ``{"format": "vqaudio-<kind>", "version", "config", "state_dict"}`` to ``path`` atomically."""
    payload = {
        "format": f"vqaudio-{kind}",
        "version": VERSION,
        "vqaudio_version": __version__,
        "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return pathlib.Path(path)


def _read(path: pathlib.Path, kind: str, map_location: str | torch.device = "cpu"):
    if not path.is_file():
        raise UserError(f"{kind} file not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or foreign files
        raise UserError(f"{path}: not a loadable vqaudio {kind} file ({type(err).__name__}: {err})") from err


def read_model(
    path: str | pathlib.Path, kinds: tuple[str, ...], map_location: str | torch.device = "cpu"
) -> tuple[str, dict, dict]:
    """The ``(kind, config, state_dict)`` of a file written by :func:`save_model` for one of ``kinds``,
    read once.

    Raises :class:`UserError` naming the file when it is missing, not a vqaudio file of these kinds, or newer
    than this vqaudio reads.
    """
    path = pathlib.Path(path)
    wanted = " or ".join(kinds)
    payload = _read(path, wanted, map_location)
    found = payload.get("format") if isinstance(payload, dict) else None
    vq = isinstance(found, str) and found.startswith("vqaudio-")
    kind = found[len("vqaudio-") :] if vq else None
    if kind not in kinds:
        what = f"a vqaudio {kind} file" if vq else "not a vqaudio model file"
        raise UserError(f"{path}: expected a vqaudio {wanted} file, this is {what}")
    version = payload.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{path}: format version {version} is newer than this vqaudio reads ({VERSION}); upgrade")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise UserError(f"{path}: a {found} file without its config or weights (truncated?)")
    return kind, payload["config"], payload["state_dict"]


def load_model(path: str | pathlib.Path, kind: str, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """The ``(config, state_dict)`` of a file written by :func:`save_model` for ``kind`` (see :func:`read_model`)."""
    return read_model(path, (kind,), map_location)[1:]


def file_checksum(path: str | pathlib.Path) -> str:
    """sha256 of a file, hex (identifies the model that produced a set of units)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
