"""Where a history backfill may start after a restart: per channel, the newest message id
below which every message has been dealt with.

The newest message processed is not enough. Messages finish out of order (a slow download
finishes after a later chat line), a temporary failure (a CDN timeout) must be retried, and a
catch-up walk through missed history may be cut short while live messages keep arriving.
The watermark therefore stays below every message still held (being harvested, or failed
for a reason that may pass) and below the position of an unfinished catch-up walk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

GIVE_UP_AFTER = 3  # temporary failures of one message before it no longer holds the mark


@dataclass
class Watermarks:
    newest: dict[int, int] = field(default_factory=dict)
    held: dict[int, set[int]] = field(default_factory=dict)
    walks: dict[int, int] = field(default_factory=dict)
    written: dict[int, int] = field(default_factory=dict)
    failures: Counter[int] = field(default_factory=Counter)

    def hold(self, channel_id: int, message_id: int) -> None:
        """``message_id`` is being harvested: the mark stays below it."""
        self.held.setdefault(channel_id, set()).add(message_id)

    def release(
        self, channel_id: int, message_id: int, *, done: bool, harvested: bool = True
    ) -> None:
        """Harvesting ``message_id`` ended; ``done`` False (a temporary failure) keeps it
        held, so that the next catch-up walks past it again, until it failed too often.
        ``harvested`` False: the channel is not harvested, there is nothing to remember."""
        if not done:
            self.failures[message_id] += 1
            if self.failures[message_id] < GIVE_UP_AFTER:
                return
        self.failures.pop(message_id, None)
        held = self.held.get(channel_id)
        if held is not None:
            held.discard(message_id)
        if harvested:
            self.saw(channel_id, message_id)

    def saw(self, channel_id: int, message_id: int) -> None:
        """``message_id`` needs nothing more."""
        if message_id > self.newest.get(channel_id, 0):
            self.newest[channel_id] = message_id

    def walking(self, channel_id: int, position: int) -> None:
        """A catch-up walk of ``channel_id`` has dealt with everything up to ``position``."""
        self.walks[channel_id] = position

    def walked(self, channel_id: int) -> None:
        """The catch-up walk reached the channel's newest message."""
        self.walks.pop(channel_id, None)

    def mark(self, channel_id: int) -> int | None:
        """The channel's watermark now (None: nothing processed yet)."""
        newest = self.newest.get(channel_id)
        if newest is None:
            return None
        limits = [newest]
        if self.held.get(channel_id):
            limits.append(min(self.held[channel_id]) - 1)
        if channel_id in self.walks:
            limits.append(self.walks[channel_id])
        return min(limits)

    def unwritten(self) -> dict[int, int]:
        """The marks that moved since they were last written."""
        marks = {channel: self.mark(channel) for channel in self.newest}
        return {
            channel: mark
            for channel, mark in marks.items()
            if mark is not None and mark != self.written.get(channel)
        }
