"""The failure a command expects (a missing token, a refused login): one line, exit status 2."""

from __future__ import annotations


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 2."""
