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
from .fileio import atomic_output, atomic_write_text, file_sha256, make_dirs

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
KINDS = ("codec", "kmeans", "wavenet-prior", "vocoder")  # every kind of model file

# The version this vqaudio writes. 2: residual depth is called ``n_q`` in every config (1 said
# ``num_quantizers`` / ``num_levels``; such files still load, their configs read through the renames).
# 3: the default codec gained 512-unit LSTMs (``lstm: 2``, ``lstm_dim: 512``).
# 4: codecs and vocoders name their decoder kind (``decoder: seanet | istft``); earlier files are SEANet.
# 5: the default codec's LSTMs have ``latent_dim`` units (``lstm_dim: null``); earlier files without the key
# had 512.
# 6: codecs name their encoder kind (``encoder: seanet | mel``), the default the mel encoder; earlier files are SEANet.
VERSION = 6

# Per kind, the values that config keys missing from a file older than a version meant when it was written:
# a later change of a default never changes what an older file holds.
EARLIER_DEFAULTS: dict[str, dict[int, dict]] = {
    "codec": {
        3: {"lstm": 0, "lstm_dim": None},
        4: {"decoder": "seanet", "decoder_lstm": True},
        5: {"lstm_dim": 512},
        6: {"encoder": "seanet"},
    },
    "vocoder": {4: {"decoder": "seanet"}},
}


def existing_model(path: pathlib.Path) -> bool:
    """Whether ``path`` holds a model: a file, or a folder with a ``config.json`` or ``model.safetensors``."""
    return path.is_file() or (path.is_dir() and any((path / name).exists() for name in (CONFIG_FILE, WEIGHTS_FILE)))


def save_model(
    path: str | pathlib.Path, kind: str, config: dict, model: nn.Module, overwrite: bool = False, folder: bool = False
) -> pathlib.Path:
    """Write the model: a folder (``config.json`` + ``model.safetensors``) unless ``path`` ends in ``.pt``,
    then one torch file ``{"format": "vqaudio-<kind>", "version", "config", "state_dict"}``; with ``folder``,
    a folder whatever the name. Each file is written atomically, readable as the umask allows; returns ``path``.

    A model already at ``path`` is refused (:class:`UserError`) unless ``overwrite``.
    """
    path = pathlib.Path(path)
    if existing_model(path) and not overwrite:
        raise UserError(f"{path}: a model is already there; refusing to replace it (remove it or choose another path)")
    meta = {"format": f"vqaudio-{kind}", "version": VERSION, "vqaudio_version": __version__, "config": config}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".pt" and not folder:
        if path.is_dir():
            raise UserError(f"{path}: is a folder; a .pt path names one file (drop the .pt to save a model folder)")
        with atomic_output(path) as tmp:
            torch.save({**meta, "state_dict": state}, tmp)
        return path
    from safetensors.torch import save_file

    if path.exists() and not path.is_dir():
        raise UserError(f"{path}: exists and is not a folder; name a .pt file or a folder to save into")
    make_dirs(path, "model")
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
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except PermissionError:
        raise UserError(f"{path / CONFIG_FILE}: permission denied (ask its owner to make it readable)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path / CONFIG_FILE}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path / CONFIG_FILE}: expected a JSON object")
    device = str(map_location) if not isinstance(map_location, str) else map_location
    try:
        meta["state_dict"] = load_file(str(path / WEIGHTS_FILE), device=device)
    except PermissionError:
        raise UserError(f"{path / WEIGHTS_FILE}: permission denied (ask its owner to make it readable)") from None
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
    if isinstance(version, bool) or not isinstance(version, int):
        raise UserError(f"{path}: format version {version!r} is not an integer (a damaged {CONFIG_FILE}?)")
    if version > VERSION:
        raise UserError(f"{path}: format version {version} is newer than this vqaudio reads ({VERSION}); upgrade")
    if not isinstance(payload.get("config"), dict) or not isinstance(payload.get("state_dict"), dict):
        raise UserError(f"{path}: a {found} file without its config or weights (truncated?)")
    state = payload["state_dict"]
    check_finite(state, path)
    return kind, with_earlier_defaults(kind, version, payload["config"]), state


def check_finite(state: dict, where) -> None:
    """Refuse weights holding NaN or Inf (:class:`UserError` naming the first such tensor and the count)."""
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{where}: weight {name!r} is a {type(value).__name__}, not a tensor")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(
                f"{where}: weight {name!r} holds {bad} NaN/Inf value(s) of {value.numel()}; the file is damaged"
            )


def check_state(model: nn.Module, state: dict) -> None:
    """Refuse weights that do not fit ``model`` (built from the file's config): a missing, extra or
    differently shaped tensor is a :class:`UserError` naming the tensor and both shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if missing:
        raise UserError(
            f"weight {missing[0]!r} (shape {tuple(expected[missing[0]].shape)}) is missing from the file"
            + (f" ({len(missing)} missing)" if len(missing) > 1 else "")
            + "; the config and the weights do not belong together"
        )
    if extra:
        raise UserError(
            f"weight {extra[0]!r} (shape {tuple(state[extra[0]].shape)}) in the file is not part of the model"
            + (f" ({len(extra)} extra)" if len(extra) > 1 else "")
            + " its config builds; the config and the weights do not belong together"
        )
    for name, value in expected.items():
        if tuple(state[name].shape) != tuple(value.shape):
            raise UserError(
                f"weight {name!r}: the file holds shape {tuple(state[name].shape)}, the config builds "
                f"{tuple(value.shape)}; the config and the weights do not belong together"
            )


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
    """sha256 of a model file, or of a model folder's config and weights in turn, hex: the identity that
    units and codes files recorded before :func:`model_checksum` (see :func:`same_model`)."""
    path = resolve_model_path(path)
    return file_sha256(*((path / CONFIG_FILE, path / WEIGHTS_FILE) if path.is_dir() else (path,)))


def model_id(kind: str, config: dict, state: dict) -> str:
    """A model's identity by content, hex sha256: its kind, its config (canonical JSON) and every weight
    tensor (name, dtype, shape, bytes, in name order). The same model saved as a ``.pt`` file or as a folder,
    or loaded from either, has the same id; any change of a weight or a config value gives another."""
    h = hashlib.sha256()
    h.update(json.dumps({"kind": kind, "config": config}, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"\n{name}\t{t.dtype}\t{list(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_checksum(path: str | pathlib.Path) -> str:
    """:func:`model_id` of the model at ``path`` (a ``.pt`` file, a model folder or a Hub id), any kind."""
    return model_id(*read_model(path, KINDS))


def same_model(recorded: str | None, path: str | pathlib.Path) -> bool:
    """Whether ``recorded`` (a ``units.json`` or ``.vqc`` model checksum) names the model at ``path``: its
    :func:`model_checksum`, or the :func:`file_checksum` that files written before it recorded."""
    if not isinstance(recorded, str):
        return False
    return recorded in (model_checksum(path), file_checksum(path))
