"""Typed configs: nested dataclasses loaded from plain dicts / YAML with errors that name the bad key."""

from __future__ import annotations

import dataclasses
import math
import pathlib
import types
import typing
from typing import Any, TypeVar

import yaml

from .errors import UserError
from .fileio import atomic_write_text

T = TypeVar("T")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        (inner,) = typing.get_args(tp)[:1]
        return [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise UserError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp in (int, str, bool) and type(value) is not tp:
        raise UserError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ``ValueError`` naming them.

    Keys a class has renamed (its ``RENAMED`` mapping, old name -> new name) are read under the new name,
    so configs and checkpoints written before the rename still load.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    data = dict(data)
    for old, new in getattr(cls, "RENAMED", {}).items():
        if old in data:
            if new in data:
                raise UserError(f"{where}: both {old!r} and its new name {new!r} are set; keep {new!r}")
            data[new] = data.pop(old)
    unknown = sorted(set(data) - names)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known keys: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    obj = cls(**kwargs)
    check_ranges(obj, where)
    return obj


def _in_range(value: float, rule: str) -> bool:
    if rule.startswith(("(", "[")):  # an interval such as "(0, 1]"
        lo, hi = (float(x) for x in rule[1:-1].split(","))
        above = value > lo if rule[0] == "(" else value >= lo
        below = value < hi if rule[-1] == ")" else value <= hi
        return above and below
    op, bound = (rule[:2], rule[2:]) if rule[1] == "=" else (rule[:1], rule[1:])
    return {">": value > float(bound), "<": value < float(bound), ">=": value >= float(bound)}[op]


def check_ranges(obj: Any, where: str = "config") -> None:
    """Check the fields a dataclass lists in its ``RANGES`` (name -> ``">0"``, ``">=1"``, ``"(0, 1]"``...);
    a value outside raises :class:`UserError` naming the key, the value and the accepted range."""
    for name, rule in getattr(type(obj), "RANGES", {}).items():
        value = getattr(obj, name)
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if v is not None and not _in_range(float(v), rule.replace(" ", "")):
                raise UserError(f"{where}.{name}: {value!r} is out of range; it must be {rule}")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def load_yaml(cls: type[T], path: str | pathlib.Path) -> T:
    """Load ``cls`` from a YAML file; errors name the file and the key."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return from_dict(cls, data, where=str(path))


def save_yaml(obj: Any, path: str | pathlib.Path) -> None:
    """Write a dataclass as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))
