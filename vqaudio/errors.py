"""The error type for bad input: the command line reports it in one line, anything else keeps its traceback."""

from __future__ import annotations


class UserError(ValueError):
    """Input the user can fix (a file, an option, a config value); the message names it and says how.

    A ``ValueError`` subclass, so library callers that catch ``ValueError`` keep working.
    """
