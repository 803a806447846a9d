"""How a job body stops early: an expected failure with a reason for the user, or a cancel."""

from __future__ import annotations


class JobFailure(Exception):
    """An expected failure; the message is shown to the user as is."""


class JobCancelled(Exception):
    """The user cancelled the job; it stops at a progress checkpoint."""
