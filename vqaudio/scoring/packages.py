"""The optional packages behind the scorers, each missing one reported in one line."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError

INSTALL = "pip install 'vqaudio[eval]'"


def require(module: str, score: str) -> ModuleType:
    """Import ``module`` for ``score``, or raise a one-line :class:`UserError` saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(f"{score} needs the {module} package ({err}): {INSTALL}") from None
