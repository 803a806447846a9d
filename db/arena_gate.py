"""The arena's human gate for LoRA promotion (issue 15, item 3).

A guild can require that a LoRA candidate wins blind duels against the configuration it would
replace (the guild's active LoRA, or the base generator when none) before it is promoted:

1. Settings (:class:`GateSettings`, table ``arena_settings``): gate on/off (off by default),
   the bar (``min_votes`` counted votes, the win-rate interval's low end above ``threshold``),
   how many duels a candidate gets, votes per duel, how long one stays open, and the channel
   scheduled duels go to. :func:`get_arena_settings` / :func:`set_arena_settings` (validated).
2. A run (:class:`db.models.GateRun`) per gated candidate: :func:`start_gate_run` (the adapt
   job, in the transaction that registers the candidate) creates its ``pending`` duels on the
   guild's recent prompts (consent applied; else the adapt job's held-out prompts). The bot's
   delivery loop queues each scheduled duel's job once (:func:`duels_awaiting_job`,
   :func:`attach_job`).
3. The decision: whenever one of the run's duels closes, the closer calls
   :func:`settle_after_close` in its transaction; under the run's row lock the head-to-head of
   the run's duels is judged (:func:`decide_gate`): passed -> the candidate is promoted (guild
   scope) and the decision posted; every duel closed without a pass -> refused, posted too.
   The status transition under the lock and the outbox row's dedupe key make it exactly once.
   A decided run's duels that have no job yet are closed with it (never generated, never
   posted: no reveal); its queued and open duels go on and close as any duel.
4. :func:`check_promotion_allowed`: a gated guild's LoRA candidate is promoted by hand only
   once its run passed.

The decision rule :func:`decide_gate` is :func:`rules.gate.decide`, the arithmetic that
:func:`hps.arena.gate.gate_decision` uses too (``db/`` may not import ``hps/``; both import the
dependency-free ``rules/``), so the promotion a channel sees and the one made here agree.

Every function takes a Session inside the caller's transaction and never commits.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.arena import (
    BASE_MODEL_ID,
    MAX_OPEN_SECONDS,
    ClosedDuel,
    CloseReason,
    Tally,
    close_duel,
    configuration_names,
    create_duel,
    head_to_head,
)
from db.errors import DomainError
from db.models import (
    ArenaSettings,
    Duel,
    DuelStatus,
    GateRun,
    GateRunStatus,
    Generation,
    Job,
    JobStatus,
    ModelKind,
    ModelStatus,
    ModelVersion,
    Prompt,
    utcnow,
)
from db.outbox import OutboxKind, write_outbox
from db.registry import get_active_model, promote_model_version
from db.scope import Scope
from db.upsert import insert_for
from rules.gate import GatePolicy, GateRecord, decide

LEVEL = 0.95  # the interval's level (rules.gate.GatePolicy's default)
BOTH_BAD = "tie"  # both-bad votes count as ties (conservative: they pull towards 0.5)
LIMITS = {
    "min_votes": (1, 10_000),
    "duels_per_candidate": (1, 50),
    "votes_per_duel": (1, 1000),
    "duel_open_seconds": (60, MAX_OPEN_SECONDS),
}
RESEND_AFTER = timedelta(minutes=15)
# Generations read per wanted prompt when looking for distinct recent prompts (reposts of
# one prompt take several rows).
RECENT_ROWS_PER_PROMPT = 20


class InvalidArenaSettings(DomainError):
    code = "invalid_arena_settings"


class PromotionGated(DomainError):
    code = "promotion_gated"


@dataclass(frozen=True)
class GateSettings:
    """A guild's arena settings (the defaults when it never changed them)."""

    guild_id: int
    gate_enabled: bool = False
    min_votes: int = 30
    threshold: float = 0.5
    duels_per_candidate: int = 6
    votes_per_duel: int = 10
    duel_open_seconds: int = 24 * 3600
    arena_channel_id: int | None = None

    def policy_fields(self) -> dict[str, Any]:
        """Keyword arguments of ``hps.arena.gate.GatePolicy`` for these settings."""
        return {
            "min_votes": self.min_votes,
            "level": LEVEL,
            "threshold": self.threshold,
            "both_bad": BOTH_BAD,
        }

    def describe(self) -> str:
        """One line a channel can read."""
        state = "on" if self.gate_enabled else "off"
        channel = f"<#{self.arena_channel_id}>" if self.arena_channel_id else "the adapt channel"
        hours = self.duel_open_seconds / 3600
        return (
            f"Human gate {state}: a LoRA candidate needs {self.min_votes}+ votes with its "
            f"win rate's 95% interval above {self.threshold:g}; {self.duels_per_candidate} duels "
            f"per candidate, closing at {self.votes_per_duel} votes or after {hours:g} h, "
            f"posted in {channel}."
        )


# --- settings -------------------------------------------------------------------------------


def get_arena_settings(session: Session, guild_id: int) -> GateSettings:
    """The guild's arena settings (defaults when it has no row)."""
    row = session.get(ArenaSettings, guild_id)
    if row is None:
        return GateSettings(guild_id)
    return GateSettings(
        guild_id=guild_id,
        gate_enabled=row.gate_enabled,
        min_votes=row.min_votes,
        threshold=row.threshold,
        duels_per_candidate=row.duels_per_candidate,
        votes_per_duel=row.votes_per_duel,
        duel_open_seconds=row.duel_open_seconds,
        arena_channel_id=row.arena_channel_id,
    )


def validate_settings(settings: GateSettings) -> None:
    """Raise InvalidArenaSettings, naming the setting and its range, for a value out of it."""
    for name, (low, high) in LIMITS.items():
        value = getattr(settings, name)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidArenaSettings(f"{name} must be a whole number {low}..{high}, not {value}")
    threshold = settings.threshold
    if not isinstance(threshold, int | float) or not 0 <= threshold < 1 or math.isnan(threshold):
        raise InvalidArenaSettings(f"threshold must be at least 0 and below 1, not {threshold}")
    if settings.arena_channel_id is not None and settings.arena_channel_id <= 0:
        raise InvalidArenaSettings(f"not a channel id: {settings.arena_channel_id}")


def set_arena_settings(
    session: Session, guild_id: int, *, clear_channel: bool = False, **changes: Any
) -> GateSettings:
    """Change some of the guild's arena settings (the others stay) and return them all.
    ``changes`` names :class:`GateSettings` fields (None: unchanged); ``clear_channel``
    forgets the arena channel. InvalidArenaSettings for an unknown setting or a value out of
    range (nothing written)."""
    unknown = set(changes) - (set(GateSettings.__dataclass_fields__) - {"guild_id"})
    if unknown:
        raise InvalidArenaSettings(f"unknown arena setting(s): {', '.join(sorted(unknown))}")
    session.execute(
        insert_for(session, ArenaSettings)
        .values(**asdict(GateSettings(guild_id)), updated_at=utcnow())
        .on_conflict_do_nothing(index_elements=["guild_id"])
    )
    row = session.scalar(
        select(ArenaSettings)
        .where(ArenaSettings.guild_id == guild_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    current = get_arena_settings(session, guild_id)
    wanted = replace(current, **{k: v for k, v in changes.items() if v is not None})
    if clear_channel:
        wanted = replace(wanted, arena_channel_id=None)
    validate_settings(wanted)
    for name, value in asdict(wanted).items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    session.flush()
    return wanted


# --- the decision rule ----------------------------------------------------------------------


def decide_gate(
    record: Tally, settings: GateSettings, candidate: str, compared: str
) -> dict[str, Any]:
    """The gate's decision on the candidate's record (``record.a``: votes for the candidate,
    ``record.b``: for the compared configuration), as ``GateDecision.to_dict`` gives it:
    passed, votes, win_rate, interval, reason."""
    gate_record = GateRecord(
        candidate, compared, record.a, record.tie, record.b, both_bad=record.both_bad
    )
    return decide(gate_record, GatePolicy(**settings.policy_fields())).to_dict()


# --- runs -----------------------------------------------------------------------------------


def gate_prompts(
    session: Session, guild_id: int, count: int, fallback: Sequence[str] = ()
) -> list[tuple[str, int | None]]:
    """``count`` prompts for a run's duels, each with its author (the requester of its latest
    generation; None for a held-out prompt): the guild's most recently used distinct prompts
    (consent applied; never another guild's), then ``fallback`` (the adapt job's held-out
    prompts), repeated in turn when there are fewer; empty when there are none at all."""
    rows = session.execute(
        select(Prompt.text, Generation.requester_id)
        .join(Generation, Generation.prompt_id == Prompt.id)
        .where(Scope.guild(guild_id).generations())
        .order_by(Generation.created_at.desc(), Generation.id.desc())
        .limit(count * RECENT_ROWS_PER_PROMPT)
    ).all()
    authors: dict[str, int | None] = {}
    for text, requester in rows:
        authors.setdefault(text, requester)
    for text in fallback:
        if text.strip():
            authors.setdefault(text, None)
    prompts = list(authors.items())[:count]
    return [prompts[i % len(prompts)] for i in range(count)] if prompts else []


def _compared_id(session: Session, guild_id: int, candidate_id: int) -> int | None:
    active = get_active_model(session, ModelKind.lora, guild_id)
    return active.id if active is not None and active.id != candidate_id else None


def start_gate_run(
    session: Session,
    *,
    guild_id: int,
    candidate_id: int,
    channel_id: int | None,
    generator: str,
    fallback_prompts: Sequence[str] = (),
    rng: random.Random | None = None,
) -> GateRun | None:
    """Start the human gate of a freshly registered LoRA candidate when the guild's gate is
    on (None otherwise, or when there is no channel to post in): the run against the guild's
    active LoRA (or the base generator) and its ``pending`` duels, posted in the arena channel
    (else ``channel_id``). A run without any prompt is refused at once (and says so).
    Idempotent per candidate."""
    settings = get_arena_settings(session, guild_id)
    channel = settings.arena_channel_id or channel_id
    if not settings.gate_enabled or channel is None:
        return None
    existing = session.scalar(select(GateRun).where(GateRun.candidate_id == candidate_id))
    if existing is not None:
        return existing
    run = GateRun(
        guild_id=guild_id,
        candidate_id=candidate_id,
        compared_id=_compared_id(session, guild_id, candidate_id),
        status=GateRunStatus.running,
        channel_id=channel,
        created_at=utcnow(),
    )
    session.add(run)
    session.flush()
    prompts = gate_prompts(session, guild_id, settings.duels_per_candidate, fallback_prompts)
    for prompt, author in prompts:
        duel = create_duel(
            session,
            guild_id=guild_id,
            channel_id=channel,
            prompt=prompt,
            generator=generator,
            configurations=(candidate_id, run.compared_id),
            open_seconds=settings.duel_open_seconds,
            max_votes=settings.votes_per_duel,
            rng=rng,
        )
        duel.gate_run_id = run.id
        duel.prompt_author_id = author
    session.flush()
    if not prompts:
        _decide(session, run, settings, _no_prompts(session, run))
    return run


def _no_prompts(session: Session, run: GateRun) -> dict[str, Any]:
    names = _names(session, run)
    return {
        "passed": False,
        "votes": 0,
        "win_rate": 0.5,
        "interval": [0.0, 1.0],
        "reason": f"{names[0]} against {names[1]}: no prompts to duel on in this server.",
    }


def get_gate_run(session: Session, guild_id: int, candidate_id: int) -> GateRun | None:
    """The guild's gate run of a candidate (None: none, or another guild's)."""
    return session.scalar(
        select(GateRun).where(GateRun.candidate_id == candidate_id, GateRun.guild_id == guild_id)
    )


def _names(session: Session, run: GateRun) -> tuple[str, str]:
    compared = run.compared_id or BASE_MODEL_ID
    names = configuration_names(session, [run.candidate_id, compared])
    return names[run.candidate_id], names[compared]


def current_decision(session: Session, run: GateRun, *, closed_only: bool = True) -> dict[str, Any]:
    """The decision the run's closed duels give now (with ``closed_only`` false, its open
    duels' votes so far too); the stored one once decided."""
    if run.decision is not None:
        return dict(run.decision)
    record = head_to_head(
        session,
        Scope.guild(run.guild_id),
        run.candidate_id,
        run.compared_id,
        closed_only=closed_only,
        gate_run_id=run.id,
    )
    candidate, compared = _names(session, run)
    return decide_gate(record, get_arena_settings(session, run.guild_id), candidate, compared)


# --- deciding -------------------------------------------------------------------------------


def settle_after_close(session: Session, closed: ClosedDuel) -> GateRunStatus | None:
    """Called by whoever closed a duel, in the closing transaction: judge the duel's gate run
    (if any). Returns the run's new status when this call decided it, else None."""
    if closed.gate_run_id is None:
        return None
    return evaluate_gate_run(session, closed.gate_run_id)


def evaluate_gate_run(session: Session, run_id: int) -> GateRunStatus | None:
    """Judge a running gate run on its closed duels, under the run's row lock: passed ->
    promote the candidate in its guild and post the decision; all duels closed without a
    pass -> refused, posted too; else nothing yet. Exactly one caller decides a run."""
    run = session.scalar(
        select(GateRun)
        .where(GateRun.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if run is None or run.status != GateRunStatus.running:
        return None
    decision = current_decision(session, run)
    if not decision["passed"] and _open_duels(session, run.id):
        return None
    return _decide(session, run, get_arena_settings(session, run.guild_id), decision)


def settle_emptied_runs(session: Session, limit: int = 20) -> list[GateRunStatus]:
    """Judge running runs none of whose duels is still pending or open: their duels may have
    been deleted with a forgotten prompt author (nothing closed them, so nobody judged the
    run). Called on the bot's timed rounds; each run is decided once (row lock)."""
    unfinished = (
        select(Duel.id)
        .where(Duel.gate_run_id == GateRun.id, Duel.status != DuelStatus.closed)
        .exists()
    )
    run_ids = session.scalars(
        select(GateRun.id)
        .where(GateRun.status == GateRunStatus.running, ~unfinished)
        .order_by(GateRun.id)
        .limit(limit)
    ).all()
    settled = [evaluate_gate_run(session, int(run_id)) for run_id in run_ids]
    return [status for status in settled if status is not None]


def _open_duels(session: Session, run_id: int) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(Duel)
            .where(Duel.gate_run_id == run_id, Duel.status != DuelStatus.closed)
        )
        or 0
    )


def _decide(
    session: Session, run: GateRun, settings: GateSettings, decision: dict[str, Any]
) -> GateRunStatus:
    promoted = False
    if decision["passed"]:
        candidate = session.get(ModelVersion, run.candidate_id)
        if candidate is not None and candidate.status == ModelStatus.candidate:
            promote_model_version(session, run.candidate_id, Scope.guild(run.guild_id))
            promoted = True
    run.status = GateRunStatus.passed if decision["passed"] else GateRunStatus.refused
    run.decision = decision
    run.decided_at = utcnow()
    session.flush()
    _cancel_unstarted_duels(session, run.id, run.decided_at)
    candidate_name, compared_name = _names(session, run)
    payload = {
        "run_id": run.id,
        "candidate_id": run.candidate_id,
        "candidate": candidate_name,
        "compared": compared_name,
        "status": run.status.value,
        "promoted": promoted,
        "min_votes": settings.min_votes,
        "threshold": settings.threshold,
        "decision": decision,
    }
    write_outbox(
        session,
        OutboxKind.gate_decision,
        payload,
        channel_id=run.channel_id,
        guild_id=run.guild_id,
        dedupe_key=f"gate-decision:{run.id}",
    )
    return run.status


def _cancel_unstarted_duels(session: Session, run_id: int, now: datetime | None = None) -> int:
    """Close a decided run's duels that are still ``pending`` with no job (never generated,
    never posted, so no vote and no message: nothing to reveal); how many. Its queued and
    open duels go on (members may be voting). A bot queueing one of them at the same moment
    holds its row lock: this waits, sees the job, and leaves that duel alone."""
    result = session.execute(
        update(Duel)
        .where(
            Duel.gate_run_id == run_id,
            Duel.status == DuelStatus.pending,
            Duel.job_id.is_(None),
        )
        # "manual": closed by a decision, as an admin would, not by votes or the deadline.
        .values(
            status=DuelStatus.closed,
            closed_at=now or utcnow(),
            close_reason=CloseReason.manual.value,
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- scheduled duels' jobs ------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledDuel:
    """A scheduled duel that needs its job: where its job is asked for."""

    duel_id: int
    guild_id: int
    channel_id: int


def duels_awaiting_job(session: Session, limit: int = 20) -> list[ScheduledDuel]:
    """Scheduled (gate) duels still pending with no job yet, oldest first, locked (SKIP
    LOCKED on PostgreSQL: two bots never take the same one) until the caller's commit."""
    query = (
        select(Duel.id, Duel.guild_id, Duel.channel_id)
        .where(
            Duel.gate_run_id.is_not(None),
            Duel.status == DuelStatus.pending,
            Duel.job_id.is_(None),
        )
        .order_by(Duel.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [ScheduledDuel(int(i), int(g), int(c)) for i, g, c in session.execute(query)]


def attach_job(session: Session, duel_id: int, job_id: uuid.UUID) -> None:
    """Record the job queued for a scheduled duel (with the job's row, in one transaction)."""
    duel = session.get(Duel, duel_id)
    if duel is None or duel.job_id is not None:
        raise DomainError(f"duel {duel_id} is gone or has a job already")
    duel.job_id = job_id
    session.flush()


def stale_duel_jobs(session: Session, now: datetime | None = None) -> list[uuid.UUID]:
    """Jobs of scheduled duels still ``queued`` :data:`RESEND_AFTER` after they were last
    sent (a bot that died between recording and sending one): their ``updated_at`` is moved
    to now, and the caller sends them again (a task sent twice runs once: db.jobs)."""
    now = now or utcnow()
    jobs = session.scalars(
        select(Job)
        .join(Duel, Duel.job_id == Job.id)
        .where(
            Duel.status == DuelStatus.pending,
            Duel.gate_run_id.is_not(None),
            Job.status == JobStatus.queued,
            Job.updated_at < now - RESEND_AFTER,
        )
        .with_for_update(of=Job, skip_locked=True)
    ).all()
    for job in jobs:
        job.updated_at = now
    session.flush()
    return [job.id for job in jobs]


def close_failed_duels(session: Session, now: datetime | None = None) -> list[ClosedDuel]:
    """Scheduled duels whose job failed or was cancelled never get images: close them (so
    their run can still be decided); each is returned to exactly one caller."""
    failed = session.scalars(
        select(Duel.id)
        .join(Job, Job.id == Duel.job_id)
        .where(
            Duel.status == DuelStatus.pending,
            Duel.gate_run_id.is_not(None),
            Job.status.in_([JobStatus.failed, JobStatus.cancelled]),
        )
    ).all()
    closed = [close_duel(session, int(duel_id), CloseReason.manual, now) for duel_id in failed]
    return [duel for duel in closed if duel is not None]


# --- promotion by hand ----------------------------------------------------------------------


def check_promotion_allowed(session: Session, guild_id: int, version_id: int) -> None:
    """Raise PromotionGated when the guild's gate is on and ``version_id`` is one of its LoRA
    candidates whose gate run has not passed; the message gives the current numbers. Anything
    else (an HPS model, another guild's or unknown version, the gate off) passes."""
    settings = get_arena_settings(session, guild_id)
    if not settings.gate_enabled:
        return
    version = session.scalar(
        select(ModelVersion).where(
            ModelVersion.id == version_id,
            ModelVersion.guild_id == guild_id,
            ModelVersion.kind == ModelKind.lora,
        )
    )
    if version is None or version.status != ModelStatus.candidate:
        return
    run = get_gate_run(session, guild_id, version_id)
    if run is None:
        raise PromotionGated(
            f"this server's human gate is on and LoRA {version_id} has no arena run; "
            "only a candidate that wins its duels is promoted."
        )
    if run.status == GateRunStatus.passed:
        return
    decision = current_decision(session, run, closed_only=False)
    state = "refused" if run.status == GateRunStatus.refused else "still running, votes so far"
    raise PromotionGated(
        f"this server's human gate is on: LoRA {version_id}'s arena run is {state} "
        f"({decision['reason']})"
    )
