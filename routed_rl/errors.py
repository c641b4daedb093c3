"""The package's user-error type, the one "did you mean" helper that every one-line error message uses, and
the one check that a name is one of the experts."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = ["UserError", "check_expert_name", "did_you_mean"]


class UserError(ValueError):
    """Bad input from the user (a config, a CLI argument, a file): the message is one line that says what to
    fix. The CLI prints it as ``error: ...`` and exits with code 2; any other exception is a bug and shows its
    traceback. A ``ValueError``, so ``except ValueError`` keeps working."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``valid`` to ``name``, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_expert_name(name: str, expert_names: Sequence[str], what: str = "") -> None:
    """Raise a one-line :class:`UserError` unless ``name`` is one of ``expert_names``; ``what`` (e.g. the config
    key) starts the message: ``"<what> names unknown expert 'x' (did you mean 'y'?); experts are [...]"``."""
    if name not in expert_names:
        where = f"{what} names " if what else ""
        raise UserError(f"{where}unknown expert {name!r}{did_you_mean(name, expert_names)}; experts are {list(expert_names)}")
