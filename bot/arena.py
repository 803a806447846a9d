"""The arena in chat: ``/hps arena`` creates a blind duel (``db.arena``) and queues its ``duel``
job; the worker posts two images, A and B, under persistent vote buttons (the duel id is in each
button's custom_id, ``hps:duel:<id>:<vote>``, so a click works after any restart). Each click is
:func:`db.arena.record_vote`; a vote that closes the duel, or the delivery loop's sweep
(:func:`sweep_due_duels`), writes the reveal through the outbox in the closing transaction, so
the message is edited once to name the sides, with the tally. Nothing here pings anyone."""

from __future__ import annotations

import io
import logging
import re
import uuid
from functools import partial
from typing import Any

import discord
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot import metrics
from bot.formatting import RenderedPost
from bot.services import services_of
from db.arena import (
    BASE_MODEL_ID,
    DEFAULT_GENERATOR,
    ClosedDuel,
    VoteOutcome,
    close_due_duels,
    configuration_names,
    create_duel,
    record_vote,
)
from db.arena_gate import (
    attach_job,
    close_failed_duels,
    duels_awaiting_job,
    settle_after_close,
    settle_emptied_runs,
    stale_duel_jobs,
)
from db.engine import run_transaction_async
from db.errors import DomainError
from db.jobs import create_job
from db.models import ModelKind, ModelStatus, ModelVersion
from db.outbox import OutboxKind, write_outbox
from db.registry import get_active_model
from discord_text import fit_content, quote_user_text
from jobqueue.contracts import DuelParams
from media.store import ImageStore

log = logging.getLogger(__name__)
CUSTOM_ID = re.compile(r"hps:duel:(?P<duel_id>[0-9]{1,19}):(?P<vote>a|b|tie|both_bad)")
VOTE_LABELS = {"a": "A", "b": "B", "tie": "tie", "both_bad": "both bad"}
DUEL_OPEN_SECONDS = 24 * 3600
PROMPT_CHARS = 300
NAME_CHARS = 80
ANSWERS = {
    VoteOutcome.recorded: "Vote recorded: {vote}. Click another button to change it.",
    VoteOutcome.changed: "Vote changed to {vote}.",
    VoteOutcome.unchanged: "Already counted: {vote}.",
    VoteOutcome.closed: "This duel is closed; votes are no longer taken.",
    VoteOutcome.not_open: "This duel is not open yet.",
    VoteOutcome.opted_out: (
        "You opted out, so your vote is not counted (`/hps privacy optin` to take part)."
    ),
    VoteOutcome.consent_required: (
        "This server counts the votes of members who opted in: `/hps privacy optin` first."
    ),
    VoteOutcome.bot: "Bots' votes are not counted.",
}


def duel_configurations(session: Session, guild_id: int) -> tuple[int | None, int | None] | None:
    """The two configurations a guild's duel compares: its newest LoRA candidate against its
    active LoRA (or the base generator), else its active LoRA against the base generator;
    None when the guild has no LoRA at all."""
    active = get_active_model(session, ModelKind.lora, guild_id)
    candidate = session.scalar(
        select(ModelVersion.id)
        .where(
            ModelVersion.kind == ModelKind.lora,
            ModelVersion.status == ModelStatus.candidate,
            ModelVersion.guild_id == guild_id,
        )
        .order_by(ModelVersion.id.desc())
        .limit(1)
    )
    if candidate is not None:
        return candidate, active.id if active else None
    return (active.id, None) if active else None


def new_duel(
    session: Session,
    *,
    guild_id: int,
    channel_id: int,
    prompt: str,
    requested_by: int,
    max_votes: int,
    generator: str = DEFAULT_GENERATOR,
) -> int | None:
    """Create a pending duel for ``/hps arena`` between configurations of ``generator`` (the
    configured one: :func:`db.arena.generator_name`); its id, or None when the guild has
    nothing to compare."""
    configurations = duel_configurations(session, guild_id)
    if configurations is None:
        return None
    duel = create_duel(
        session,
        guild_id=guild_id,
        channel_id=channel_id,
        prompt=prompt,
        generator=generator,
        configurations=configurations,
        open_seconds=DUEL_OPEN_SECONDS,
        max_votes=max_votes,
        requested_by=requested_by,
    )
    return duel.id


def write_reveal(session: Session, closed: ClosedDuel) -> int | None:
    """Queue the edit that reveals a closed duel (in the closing transaction: exactly once;
    the dedupe key holds even if a second closer slipped through). None for a duel that was
    never posted: there is no message to edit."""
    if closed.message_id is None:
        return None
    ids = [closed.version_a_id or BASE_MODEL_ID, closed.version_b_id or BASE_MODEL_ID]
    names = configuration_names(session, ids)
    payload = {
        "duel_id": closed.duel_id,
        "message_id": closed.message_id,
        "a": names[ids[0]],
        "b": names[ids[1]],
        "tally": {
            "a": closed.tally.a,
            "b": closed.tally.b,
            "tie": closed.tally.tie,
            "both_bad": closed.tally.both_bad,
        },
        "reason": closed.reason.value,
    }
    return write_outbox(
        session,
        OutboxKind.duel_reveal,
        payload,
        channel_id=closed.channel_id,
        guild_id=closed.guild_id,
        dedupe_key=f"duel-reveal:{closed.duel_id}",
    )


def after_close(session: Session, closed: ClosedDuel) -> None:
    """What follows a duel's closing, in the closing transaction (so exactly once): its
    reveal, and the judgement of its human-gate run if the arena scheduled it."""
    write_reveal(session, closed)
    settled = settle_after_close(session, closed)
    if settled is not None:
        log.info("gate run %s of duel %s: %s", closed.gate_run_id, closed.duel_id, settled)


def sweep_due_duels(session: Session) -> int:
    """Close the duels past their deadline (and scheduled ones whose job failed), queue
    their reveals and judge their gate runs (and the runs whose duels are all gone); how
    many closed."""
    closed = close_due_duels(session) + close_failed_duels(session)
    for duel in closed:
        after_close(session, duel)
    settle_emptied_runs(session)
    return len(closed)


def queue_scheduled_duels(session: Session, limit: int = 20) -> list[uuid.UUID]:
    """Record the ``duel`` job of each scheduled duel that has none yet, with the job's id
    stored on the duel in the same transaction (so each is queued once, whichever bot asks);
    plus the jobs recorded before but apparently never sent (:func:`stale_duel_jobs`). The
    caller sends them all after the commit."""
    job_ids = stale_duel_jobs(session)
    for duel in duels_awaiting_job(session, limit):
        job = create_job(
            session,
            "duel",
            DuelParams(duel_id=duel.duel_id).stored(),
            guild_id=duel.guild_id,
            channel_id=duel.channel_id,
        )
        attach_job(session, duel.duel_id, job.id)
        job_ids.append(job.id)
    return job_ids


def _vote(
    session: Session, *, duel_id: int, user_id: int, vote: str, guild_id: int | None, bot: bool
) -> VoteOutcome:
    result = record_vote(session, duel_id, user_id, vote, guild_id=guild_id, voter_is_bot=bot)
    if result.closed is not None:
        after_close(session, result.closed)
    return result.outcome


class DuelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=CUSTOM_ID.pattern):
    """One vote button of a duel; persistent (the state is in the custom_id)."""

    def __init__(self, duel_id: int, vote: str) -> None:
        super().__init__(
            discord.ui.Button(
                label=VOTE_LABELS[vote],
                style=discord.ButtonStyle.secondary,
                custom_id=f"hps:duel:{duel_id}:{vote}",
            )
        )
        self.duel_id = duel_id
        self.vote = vote

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> DuelButton:
        return cls(int(match["duel_id"]), match["vote"])

    async def callback(self, interaction: discord.Interaction) -> None:
        services = services_of(interaction.client)
        await interaction.response.defer(ephemeral=True, thinking=True)
        metrics.observe_ack_since(interaction.created_at)
        vote = partial(
            _vote,
            duel_id=self.duel_id,
            user_id=interaction.user.id,
            vote=self.vote,
            guild_id=interaction.guild_id,
            bot=interaction.user.bot,
        )
        try:
            outcome = await run_transaction_async(services.async_factory, vote)
        except DomainError as exc:
            metrics.count_error(exc)
            await interaction.edit_original_response(content=f"Not recorded: {exc}")
            return
        except Exception:  # never leave the user looking at "thinking..."
            metrics.count_error("duel_vote")
            log.exception("vote in duel %s not recorded", self.duel_id)
            await interaction.edit_original_response(
                content="Sorry, your vote was not recorded (a problem on my side); try again."
            )
            return
        answer = ANSWERS[outcome].format(vote=VOTE_LABELS[self.vote])
        await interaction.edit_original_response(content=answer)


def duel_view(duel_id: int) -> discord.ui.View:
    """The persistent vote buttons of a duel: A, B, tie, both bad."""
    view = discord.ui.View(timeout=None)
    for vote in VOTE_LABELS:
        view.add_item(DuelButton(duel_id, vote))
    return view


def render_duel(payload: dict[str, Any], store: ImageStore) -> RenderedPost:
    """The duel's message: the prompt and the two images, blinded (no model names)."""
    prompt = quote_user_text(str(payload.get("prompt", "")), PROMPT_CHARS)
    files = [
        discord.File(io.BytesIO(store.get(payload[key]["sha256"])), filename=name)
        for key, name in (("image_a", "A.png"), ("image_b", "B.png"))
    ]
    content = discord.utils.escape_mentions(
        f"**{prompt}**: which image is better? Vote A, B, tie or both bad."
    )
    return RenderedPost(fit_content(content), files)


def reveal_text(payload: dict[str, Any]) -> str:
    """The closed duel's message: which configuration each side was, and the tally."""
    tally = payload.get("tally", {})
    side_a = quote_user_text(str(payload.get("a", "?")), NAME_CHARS)
    side_b = quote_user_text(str(payload.get("b", "?")), NAME_CHARS)
    total = sum(int(n) for n in tally.values())
    text = (
        f"Duel closed ({total} votes). A was **{side_a}**, B was **{side_b}**. "
        f"A {tally.get('a', 0)} · B {tally.get('b', 0)} · tie {tally.get('tie', 0)} · "
        f"both bad {tally.get('both_bad', 0)}"
    )
    return fit_content(discord.utils.escape_mentions(text))


def gate_decision_text(payload: dict[str, Any]) -> str:
    """The human gate's verdict on a LoRA candidate, with its numbers (no pings)."""
    decision = payload.get("decision", {})
    candidate = quote_user_text(str(payload.get("candidate", "?")), NAME_CHARS)
    compared = quote_user_text(str(payload.get("compared", "?")), NAME_CHARS)
    low, high = (float(x) for x in decision.get("interval", (0.0, 1.0)))
    passed = payload.get("status") == "passed"
    if passed:
        verdict = "promoted" if payload.get("promoted") else "passed (it was no longer a candidate)"
        head = f"Human gate: **{candidate}** beat **{compared}** in the arena and is {verdict}."
    else:
        head = f"Human gate: **{candidate}** is not promoted; **{compared}** stays."
    numbers = (
        f"Win rate {float(decision.get('win_rate', 0.5)):.2f}, 95% interval "
        f"[{low:.2f}, {high:.2f}], {int(decision.get('votes', 0))} votes "
        f"(needs {payload.get('min_votes', '?')}+ votes and the interval above "
        f"{payload.get('threshold', '?')})."
    )
    reason = quote_user_text(str(decision.get("reason", "")), 1200)
    return fit_content(discord.utils.escape_mentions(f"{head}\n{numbers}\n{reason}"))
