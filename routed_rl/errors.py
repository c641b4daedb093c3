"""The package's user-error type and the one "did you mean" helper that every one-line error message uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "did_you_mean"]


class UserError(ValueError):
    """Bad input from the user (a config, a CLI argument, a file): the message is one line that says what to
    fix. The CLI prints it as ``error: ...`` and exits with code 2; any other exception is a bug and shows its
    traceback. A ``ValueError``, so ``except ValueError`` keeps working."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``valid`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
