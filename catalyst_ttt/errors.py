"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class UserError(Exception):
    """Bad input: an unknown name, a wrong value, a missing or malformed file."""


def first_line(err: Exception) -> str:
    """What a library's (often multi-line) error says, as it fits in one line."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def read_user_text(path: Path) -> str:
    """A text file the user gave (a sweep, a data file) as UTF-8 (a BOM is dropped): a directory, an
    unreadable file or bytes that are not UTF-8 are one line naming the file (and line)."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory; give a file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); save it as UTF-8") from None


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """ "; did you mean 'x'?" for a near miss among `valid` (difflib's ratio ≥ 0.6), else ""."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> str:
    """The one line for an unknown task, regime, signal, sweep, ...: a near miss is named first."""
    valid = list(valid)
    hint = did_you_mean(name, valid)
    return f"unknown {kind} {name!r}{hint}{' ' if hint else '; '}valid: {', '.join(valid)}"
