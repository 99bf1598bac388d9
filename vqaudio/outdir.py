"""Output folders of jobs that write one file per utterance (``resynth``, ``convert``): never an input, never
another job's files, and a rerun resumes only what was asked the first time.

The request (the models', units' and data's identities, the voice, the pairs) is recorded in
``OUT/request.json`` before the first output; a rerun with the same request keeps the files already there,
one with another request is refused in one line naming what differs unless ``force`` redoes it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Iterable, Mapping

from .errors import UserError
from .fileio import atomic_write_text, check_writable, file_sha256

REQUEST_FILE = "request.json"


def digest(value) -> str:
    """sha256 of a JSON-serialisable value (sorted keys), hex."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def data_identity(data: str | pathlib.Path) -> str:
    """A Kaldi data dir's (or a cut manifest's) identity: its path and the sha256 of the files that say which
    audio it holds and whose it is (``wav.scp``, ``segments``, ``utt2spk``, ``reco2file_and_channel``)."""
    path = pathlib.Path(data).resolve()
    if path.is_file():
        return f"{path} sha256:{file_sha256(path)[:16]}"
    h = hashlib.sha256()
    for name in ("wav.scp", "segments", "utt2spk", "reco2file_and_channel"):
        if (path / name).is_file():
            h.update(name.encode() + b"\0" + (path / name).read_bytes() + b"\0")
    return f"{path} sha256:{h.hexdigest()[:16]}"


def _inside(path: pathlib.Path, folder: pathlib.Path) -> bool:
    return path == folder or folder in path.parents


def claim_output_dir(
    out: str | pathlib.Path,
    command: str,
    request: Mapping[str, object],
    outputs: Iterable[pathlib.Path],
    inputs: Mapping[str, str | pathlib.Path | None],
    force: bool = False,
) -> bool:
    """Make ``out`` ready for ``command``'s ``outputs`` (paths inside it) and record ``request`` there; returns
    whether outputs already there are to be redone (``force``), else they are kept (a rerun resumes).

    Refused in one line (nothing written): ``out`` is one of ``inputs`` (a data dir, a units dir, a source
    folder) or lies inside an input model folder; an output is an input file; outputs are there without a
    ``request.json`` (another job's files, e.g. a data dir's ``wav.scp``) unless ``force``; the recorded request
    differs (the keys are named) unless ``force``; ``out`` cannot be written.

    Args:
        inputs: ``{option: path}`` of what the job reads (``None`` entries are skipped).
    """
    out = pathlib.Path(out)
    where = out.resolve()
    for option, path in inputs.items():
        if path is None:
            continue
        p = pathlib.Path(path).resolve()
        if p.is_dir() and (where == p or ((p / "config.json").is_file() and _inside(where, p))):
            raise UserError(f"{out}: is (or is inside) the input {option} {path}; choose another output folder")
    sources = {pathlib.Path(p).resolve() for p in inputs.values() if p is not None and pathlib.Path(p).is_file()}
    outputs = [pathlib.Path(o) for o in outputs]
    for o in outputs:
        if o.resolve() in sources:
            raise UserError(f"{o}: is an input of this job; choose another output folder")
    saved = out / REQUEST_FILE
    record = {"command": command, **request}
    if saved.is_file():
        try:
            before = json.loads(saved.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            before = {}
        changed = [k for k in sorted(set(record) | set(before)) if record.get(k) != before.get(k)]
        if changed and not force:
            raise UserError(
                f"{out} holds the outputs of another request (it differs in {', '.join(changed)}; see {saved}); pass "
                "-f to redo them or choose another output folder"
            )
    elif not force:
        found = [o for o in [*outputs, out / "wav.scp"] if o.exists()]
        if found:
            raise UserError(
                f"{found[0]} exists and this command did not write it (no {REQUEST_FILE} in {out}); choose another "
                "output folder, or pass -f to replace it"
            )
    check_writable(out)
    atomic_write_text(saved, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return force


def write_failed(out: pathlib.Path, failed: list[str]) -> None:
    """``out/failed.txt`` listing ``failed``; removed when nothing failed, so no earlier run's list outlives it."""
    path = out / "failed.txt"
    if failed:
        atomic_write_text(path, "".join(f"{utt}\n" for utt in failed))
    else:
        path.unlink(missing_ok=True)
