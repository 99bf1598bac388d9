"""The optional packages behind the scorers and the lhotse and Hugging Face formats, each missing one reported
in one line."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UserError

INSTALL = "pip install 'vqaudio[eval]'"


def require(module: str, score: str, extra: str = "eval") -> ModuleType:
    """Import ``module`` for ``score``, or raise a one-line :class:`UserError` saying to install vqaudio's
    ``extra`` (``eval``: the scorers; ``lhotse``, ``hf``: the unit formats of those toolkits)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        install = INSTALL if extra == "eval" else f"pip install 'vqaudio[{extra}]'"
        raise UserError(f"{score} needs the {module} package ({err}): {install}") from None
