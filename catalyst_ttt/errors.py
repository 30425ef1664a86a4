"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: an unknown name, a wrong value, a missing or malformed file."""


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for a near miss among `valid` (difflib's ratio ≥ 0.6), else ""."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """The one line for an unknown task, regime, signal, sweep, ...: a near miss is named first."""
    valid = list(valid)
    hint = did_you_mean(name, valid)
    return f"unknown {kind} {name!r}{hint}{' ' if hint else '; '}valid: {', '.join(valid)}"
