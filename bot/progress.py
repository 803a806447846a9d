"""Progress in Discord for long work: the command's original response is edited as the work
advances (throttled, so a busy job does not hit Discord's rate limits).

Two sources: work the bot does itself (a history backfill) reports through
:class:`InteractionProgress`; jobs on the workers are followed by :class:`JobProgressWatcher`,
which reads their progress from the database and edits the response of the command that
started them until they end (the result itself is posted by the outbox delivery)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial

import discord
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import run_transaction_async
from db.jobs import job_progress
from db.models import JobStatus

log = logging.getLogger(__name__)
EDIT_INTERVAL_S = 2.0
# An interaction token lives 15 minutes; stop editing a little before, then use the channel.
TOKEN_USABLE_FOR = timedelta(minutes=14)


def progress_line(label: str, fraction: float, message: str) -> str:
    """``label: [#####.....] 50% — message``."""
    filled = round(max(0.0, min(1.0, fraction)) * 10)
    bar = "█" * filled + "░" * (10 - filled)
    return f"{label}: {bar} {fraction * 100:.0f}% — {message}" if message else f"{label}: {bar}"


class InteractionProgress:
    """Edits one interaction's original response; the final word goes to the channel when
    the token has expired."""

    def __init__(self, interaction: discord.Interaction, interval_s: float = EDIT_INTERVAL_S):
        self.interaction = interaction
        self.interval_s = interval_s
        self._last_edit = 0.0
        # The token's 15 minutes run from the interaction, not from when work started.
        self._deadline = interaction.created_at + TOKEN_USABLE_FOR

    @property
    def token_usable(self) -> bool:
        return datetime.now(UTC) < self._deadline

    async def update(self, text: str) -> None:
        """Show ``text`` unless an edit happened less than ``interval_s`` ago."""
        if time.monotonic() - self._last_edit < self.interval_s or not self.token_usable:
            return
        self._last_edit = time.monotonic()
        try:
            await self.interaction.edit_original_response(content=text)
        except discord.HTTPException as exc:  # progress is a courtesy: never fail the work
            log.info("progress edit failed: %s", exc)

    async def finish(self, text: str) -> None:
        """Show the final ``text``: in the original response, or in the channel after the
        token's lifetime."""
        if self.token_usable:
            with contextlib.suppress(discord.HTTPException):
                await self.interaction.edit_original_response(content=text)
                return
        channel = self.interaction.channel
        if isinstance(channel, discord.abc.Messageable):
            await channel.send(text)


class JobProgressWatcher:
    """Follows the jobs that slash commands started and shows their progress."""

    def __init__(
        self, factory: async_sessionmaker[AsyncSession], interval_s: float = EDIT_INTERVAL_S
    ) -> None:
        self.factory = factory
        self.interval_s = interval_s
        self._jobs: dict[uuid.UUID, tuple[str, InteractionProgress]] = {}
        self._shown: dict[uuid.UUID, tuple[float, str]] = {}
        self._task: asyncio.Task[None] | None = None

    def follow(self, job_id: uuid.UUID, label: str, interaction: discord.Interaction) -> None:
        """Show ``job_id``'s progress in ``interaction``'s response until it ends.

        The response must already have its content (the command's private "queued"
        follow-up): while it is still "thinking", Discord would make the job's result (the
        first follow-up) the response itself, private like the deferral, and a progress edit
        would overwrite it."""
        progress = InteractionProgress(interaction, interval_s=0)
        self._jobs[job_id] = (label, progress)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="job-progress")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while self._jobs:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # the database may be away for a moment: keep going
                log.warning("job progress not refreshed: %s", exc)

    async def refresh(self) -> None:
        """Edit the responses of jobs whose progress changed; forget the ones that ended."""
        states = await run_transaction_async(
            self.factory, partial(job_progress, job_ids=list(self._jobs))
        )
        for job_id, (label, progress) in list(self._jobs.items()):
            status, fraction, message = states.get(job_id, (JobStatus.failed, 0.0, ""))
            if status not in (JobStatus.queued, JobStatus.running) or not progress.token_usable:
                self._jobs.pop(job_id)
                self._shown.pop(job_id, None)
                if status == JobStatus.succeeded:
                    await progress.update(f"{label}: done, the result is posted below.")
                elif status == JobStatus.failed:
                    await progress.update(f"{label}: failed, the reason is posted below.")
                elif status == JobStatus.cancelled:
                    await progress.update(f"{label}: cancelled.")
                continue
            if status == JobStatus.running and self._shown.get(job_id) != (fraction, message):
                self._shown[job_id] = (fraction, message)
                await progress.update(progress_line(label, fraction, message))

    @property
    def following(self) -> int:
        return len(self._jobs)
