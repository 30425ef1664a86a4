"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input: an unknown name, a wrong value, a missing or malformed file."""
