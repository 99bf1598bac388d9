"""One checkpoint format for every model kind, in two containers, neither of which can run pickled code:

* a model folder (the layout of Hugging Face's EnCodec, DAC and Mimi): ``config.json`` (format tag,
  version, vqaudio version, the model's config) and ``model.safetensors`` (the weights);
* a single ``.pt`` torch file holding the same four parts, loaded with ``weights_only=True``.

:func:`save_model` picks the container by the path (``*.pt``: a file; anything else: a folder);
:func:`read_model` reads either, and a Hugging Face Hub id (``owner/name``) when ``huggingface_hub`` is
installed (``pip install vqaudio[hub]``), from its cache first so it works offline once fetched.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import torch
from torch import nn

from ._version import __version__
from .errors import UserError
from .fileio import atomic_output, atomic_write_text

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"

# The version this vqaudio writes. 2: residual depth is called ``n_q`` in every config (1 said
# ``num_quantizers`` / ``num_levels``; such files still load, their configs read through the renames).
# 3: the default codec gained 512-unit LSTMs (``lstm: 2``, ``lstm_dim: 512``).
VERSION = 3

# Per kind, the values that config keys missing from a file older than a version meant when it was written:
# a later change of a default never changes what an older file holds.
EARLIER_DEFAULTS: dict[str, dict[int, dict]] = {"codec": {3: {"lstm": 0, "lstm_dim": None}}}


def save_model(path: str | pathlib.Path, kind: str, config: dict, model: nn.Module) -> pathlib.Path:
    """Write the model: a folder (``config.json`` + ``model.safetensors``) unless ``path`` ends in ``.pt``,
    then one torch file ``{"format": "vqaudio-<kind>", "version", "config", "state_dict"}``. Each file is
    written atomically; returns ``path``."""
    path = pathlib.Path(path)
    meta = {"format": f"vqaudio-{kind}", "version": VERSION, "vqaudio_version": __version__, "config": config}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".pt":
        with atomic_output(path) as tmp:
            torch.save({**meta, "state_dict": state}, tmp)
        return path
    from safetensors.torch import save_file

    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; name a .pt file or a folder to save into")
    path.mkdir(parents=True, exist_ok=True)
    with atomic_output(path / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": meta["format"]})
    atomic_write_text(path / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")
    return path


def _read_folder(path: pathlib.Path, kind: str, map_location) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (path / name).is_file():
            raise UserError(f"{path}: a model folder needs {CONFIG_FILE} and {WEIGHTS_FILE}; {name} is missing")
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path / CONFIG_FILE}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path / CONFIG_FILE}: expected a JSON object")
    device = str(map_location) if not isinstance(map_location, str) else map_location
    try:
        meta["state_dict"] = load_file(str(path / WEIGHTS_FILE), device=device)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path / WEIGHTS_FILE}: not loadable vqaudio {kind} weights ({err})") from None
    return meta


def resolve_model_path(path: str | pathlib.Path) -> pathlib.Path:
    """A local file or folder as it is; an ``owner/name`` that is neither, through the Hugging Face Hub's
    cache (fetched when missing and the network allows) when ``huggingface_hub`` is installed."""
    path = pathlib.Path(path)
    text = str(path)
    if path.exists() or text.count("/") != 1 or text.startswith((".", "/")) or path.suffix:
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(
            f"{text}: no such file or folder (to load it as a Hugging Face Hub id: pip install huggingface_hub)"
        ) from None
    files = [CONFIG_FILE, WEIGHTS_FILE]
    try:
        return pathlib.Path(snapshot_download(text, allow_patterns=files, local_files_only=True))
    except Exception:  # not cached (the hub raises several types): fetch it
        try:
            return pathlib.Path(snapshot_download(text, allow_patterns=files))
        except Exception as err:
            raise UserError(f"{text}: not a local model and not fetched from the Hugging Face Hub ({err})") from None


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
    path = resolve_model_path(path)
    wanted = " or ".join(kinds)
    payload = _read_folder(path, wanted, map_location) if path.is_dir() else _read(path, wanted, map_location)
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
    return kind, with_earlier_defaults(kind, version, payload["config"]), payload["state_dict"]


def with_earlier_defaults(kind: str, version: int, config: dict) -> dict:
    """``config`` of a ``kind`` file of format ``version`` with the keys it lacks set as its version meant them."""
    filled = dict(config)
    for since, values in EARLIER_DEFAULTS.get(kind, {}).items():
        if version < since:
            for key, value in values.items():
                filled.setdefault(key, value)
    return filled


def load_model(path: str | pathlib.Path, kind: str, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """The ``(config, state_dict)`` of a file written by :func:`save_model` for ``kind`` (see :func:`read_model`)."""
    return read_model(path, (kind,), map_location)[1:]


def file_checksum(path: str | pathlib.Path) -> str:
    """sha256 of a model file, or of a model folder's config and weights in turn, hex (identifies the model
    that produced a set of units)."""
    path = resolve_model_path(path)
    h = hashlib.sha256()
    for part in (path / CONFIG_FILE, path / WEIGHTS_FILE) if path.is_dir() else (path,):
        with open(part, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
