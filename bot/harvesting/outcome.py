"""What harvesting did with one message."""

from __future__ import annotations

import enum


class MessageOutcome(enum.Enum):
    """What harvesting did with one message."""

    not_harvested = "channel not harvested"
    ignored = "not a generation"
    generation = "generation stored"
    known = "generation already stored"
    choice = "choice recorded"
    refused = "refused"
    retry = "failed for now (a timeout, the CDN or the database away)"
