"""The arena's data: blind A/B duels between two generator configurations, and their votes.

A duel's life (:class:`db.models.DuelStatus`):

1. :func:`create_duel` (the ``/hps arena`` command, or the human gate scheduling one): the two
   configurations are shuffled into sides A and B (blinding), the duel is ``pending``.
   A configuration is a model version id (a LoRA, or an HPS model picking the best of n) applied
   to the guild's generator, or None for the plain base generator (:data:`BASE`).
2. :func:`set_duel_images` (the worker, once both images are generated and stored).
3. :func:`open_duel` (the bot, once the message is posted): ``open``, votes are taken until
   ``closes_at`` (``open_seconds`` after posting) or until ``max_votes`` counted votes.
4. :func:`record_vote` for each click: one vote per user, changeable while open; bots,
   opted-out users and (in an opt-in guild) users who never opted in are refused.
5. Closing, exactly once: :func:`close_duel` and :func:`close_due_duels` are one conditional
   ``UPDATE ... WHERE status <> 'closed' RETURNING``, so of any number of racing closers
   (a sweep, the vote that reached ``max_votes``, an admin) exactly one gets the
   :class:`ClosedDuel` back; the caller writes the reveal's outbox row in the same
   transaction, so the reveal is posted once.

Reading votes (:func:`tally`, :func:`head_to_head`, :func:`rating_votes`,
:func:`iter_export_duel_votes`) applies guild scope (:mod:`db.scope`) and consent
(:func:`db.datasets.duel_vote_consents`: the voter, the duel's requester and a scheduled duel's
prompt author have not opted out, the same rule as for choices: the prompt is their words).
The exported votes are :func:`db.datasets.closed_duel_votes`, the query training sets use.
Forgetting a user deletes their votes, the duels they requested and the scheduled duels on
their prompts (foreign keys ``ON DELETE CASCADE``).

Every function takes a Session inside the caller's transaction and never commits.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.datasets import (
    DEFAULT_FRACTIONS,
    Split,
    closed_duel_votes,
    duel_vote_consents,
    split_for_prompt,
)
from db.errors import ConsentRequired, DomainError, UserOptedOut
from db.ingest import ensure_user_may_be_stored, upsert_prompt
from db.models import (
    Duel,
    DuelStatus,
    DuelVote,
    DuelVoteKind,
    ModelVersion,
    utcnow,
)
from db.registry import get_usable_model_version
from db.scope import Scope

BASE: None = None
"""The configuration "base generator, no model version applied" (a side's NULL version)."""
BASE_MODEL_ID = 0
"""How :func:`rating_votes` names the base generator (model version ids start at 1)."""
MAX_OPEN_SECONDS = 7 * 24 * 3600
MAX_VOTES_LIMIT = 10_000
DEFAULT_GENERATOR = "hps-sd"


def generator_name(sd_pipeline: str) -> str:
    """How duels name the configured generator (``Settings.sd_pipeline``): its last path
    part (``tiny``, ``toy``, a checkpoint folder's name), :data:`DEFAULT_GENERATOR` when
    none is configured. Never a whole path (it would show the server's layout)."""
    name = sd_pipeline.strip().rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]
    return (name or DEFAULT_GENERATOR)[:128]


class DuelNotFound(DomainError):
    code = "duel_not_found"


class InvalidDuel(DomainError):
    code = "invalid_duel"


class DuelStateError(DomainError):
    code = "duel_state"


class VoteOutcome(StrEnum):
    """What :func:`record_vote` did. The first three stored (or kept) the vote; the others
    refused it and wrote nothing."""

    recorded = "recorded"  # the user's first vote in this duel
    changed = "changed"  # replaced the user's earlier, different vote
    unchanged = "unchanged"  # the same vote again (a duplicate click)
    closed = "closed"  # the duel is closed (or past its deadline)
    not_open = "not_open"  # the duel is not posted yet
    opted_out = "opted_out"  # the user opted out: nothing of theirs is stored
    consent_required = "consent_required"  # an opt-in guild, and the user has not opted in
    bot = "bot"  # bots never vote

    @property
    def counted(self) -> bool:
        """Whether the user's vote now stands in the duel."""
        return self in (VoteOutcome.recorded, VoteOutcome.changed, VoteOutcome.unchanged)


class CloseReason(StrEnum):
    """Why a duel closed."""

    time = "time"  # its deadline passed
    votes = "votes"  # it reached max_votes
    manual = "manual"  # an admin (or a failed generation) closed it


@dataclass(frozen=True)
class Tally:
    """Counted votes of one duel (or of one pairing: :func:`head_to_head`) per kind."""

    a: int = 0
    b: int = 0
    tie: int = 0
    both_bad: int = 0

    @property
    def total(self) -> int:
        """All counted votes, both_bad included."""
        return self.a + self.b + self.tie + self.both_bad

    @property
    def decisive(self) -> int:
        """Votes for a side or a tie (what a rating uses; both_bad carries no preference)."""
        return self.a + self.b + self.tie

    def as_dict(self) -> dict[str, int]:
        """Plain JSON (for outbox payloads and the reveal)."""
        return {"a": self.a, "b": self.b, "tie": self.tie, "both_bad": self.both_bad}


@dataclass(frozen=True)
class ClosedDuel:
    """A duel this call closed: what the reveal needs. Returned to exactly one closer."""

    duel_id: int
    guild_id: int
    channel_id: int
    message_id: int | None
    version_a_id: int | None
    version_b_id: int | None
    reason: CloseReason
    closed_at: datetime
    tally: Tally
    gate_run_id: int | None = None  # the human gate's run that scheduled it, if any


@dataclass(frozen=True)
class VoteResult:
    """What :func:`record_vote` did, and the duel it closed if this vote reached
    ``max_votes`` or found the deadline passed (the caller posts the reveal)."""

    outcome: VoteOutcome
    closed: ClosedDuel | None = None


@dataclass(frozen=True)
class DuelImage:
    """A side's image as stored in the blob store (media.store)."""

    sha256: str
    storage_key: str


# --- creating and opening ---------------------------------------------------------------


def create_duel(
    session: Session,
    *,
    guild_id: int,
    channel_id: int,
    prompt: str,
    generator: str,
    configurations: tuple[int | None, int | None],
    open_seconds: int,
    max_votes: int | None = None,
    requested_by: int | None = None,
    params: dict[str, Any] | None = None,
    rng: random.Random | None = None,
) -> Duel:
    """Create a ``pending`` duel (flushed, so ``id`` is set) between two configurations of
    the guild's ``generator``: model version ids the guild may use, or :data:`BASE` (None).

    Sides are drawn at random (``rng``, default the system's) and stored; the order of
    ``configurations`` says nothing about which is A. Raises InvalidDuel for the same
    configuration twice or bad limits, ModelNotFound for a version the guild may not use
    (another guild's), UserOptedOut / ConsentRequired for a requester who may not be stored.
    """
    first, second = configurations
    if first == second:
        raise InvalidDuel("a duel needs two different configurations")
    _check_limits(open_seconds, max_votes)
    scope = Scope.guild(guild_id)
    for version_id in configurations:
        if version_id is not None:
            get_usable_model_version(session, scope, version_id)
    if requested_by is not None:
        ensure_user_may_be_stored(session, requested_by, guild_id)
    side_a, side_b = (
        (second, first) if (rng or random.SystemRandom()).random() < 0.5 else (first, second)
    )
    duel = Duel(
        guild_id=guild_id,
        channel_id=channel_id,
        prompt_id=upsert_prompt(session, prompt),
        requested_by=requested_by,
        generator=generator[:128],
        version_a_id=side_a,
        version_b_id=side_b,
        params=params or {},
        status=DuelStatus.pending,
        open_seconds=open_seconds,
        max_votes=max_votes,
        created_at=utcnow(),
    )
    session.add(duel)
    session.flush()
    return duel


def _check_limits(open_seconds: int, max_votes: int | None) -> None:
    if not 1 <= open_seconds <= MAX_OPEN_SECONDS:
        raise InvalidDuel(
            f"a duel stays open 1 s to {MAX_OPEN_SECONDS // 86400} days, not {open_seconds} s"
        )
    if max_votes is not None and not 1 <= max_votes <= MAX_VOTES_LIMIT:
        raise InvalidDuel(f"max_votes must be 1..{MAX_VOTES_LIMIT}, not {max_votes}")


def get_duel(session: Session, duel_id: int, *, guild_id: int | None = None) -> Duel:
    """A duel by id (of ``guild_id`` when given); DuelNotFound otherwise, another guild's
    worded like a missing one."""
    query = select(Duel).where(Duel.id == duel_id)
    if guild_id is not None:
        query = query.where(Duel.guild_id == guild_id)
    duel = session.scalar(query)
    if duel is None:
        raise DuelNotFound(f"no duel {duel_id} in this server")
    return duel


def set_duel_images(session: Session, duel_id: int, image_a: DuelImage, image_b: DuelImage) -> None:
    """Attach the generated images of sides A and B to a pending duel (a retried job may set
    the same ones again). DuelStateError once the duel is posted or closed."""
    duel = _locked(session, duel_id)
    if duel.status != DuelStatus.pending:
        raise DuelStateError(f"duel {duel_id} is {duel.status.value}; its images are fixed")
    duel.image_a_sha256, duel.image_a_key = image_a.sha256, image_a.storage_key
    duel.image_b_sha256, duel.image_b_key = image_b.sha256, image_b.storage_key
    session.flush()


def open_duel(session: Session, duel_id: int, message_id: int, now: datetime | None = None) -> Duel:
    """The duel was posted as ``message_id``: it opens and closes ``open_seconds`` from
    ``now``. Idempotent for the same message (a redelivered post); DuelStateError for a duel
    without images, closed, or posted as another message."""
    duel = _locked(session, duel_id)
    if duel.status == DuelStatus.open and duel.message_id == message_id:
        return duel
    if duel.status != DuelStatus.pending:
        raise DuelStateError(f"duel {duel_id} is {duel.status.value}, it cannot be posted again")
    if duel.image_a_sha256 is None or duel.image_b_sha256 is None:
        raise DuelStateError(f"duel {duel_id} has no images yet")
    now = now or utcnow()
    duel.message_id = message_id
    duel.status = DuelStatus.open
    duel.opened_at = now
    duel.closes_at = now + timedelta(seconds=duel.open_seconds)
    session.flush()
    return duel


def _locked(session: Session, duel_id: int) -> Duel:
    duel = session.scalar(
        select(Duel)
        .where(Duel.id == duel_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if duel is None:
        raise DuelNotFound(f"no duel {duel_id}")
    return duel


# --- voting -------------------------------------------------------------------------------


def record_vote(
    session: Session,
    duel_id: int,
    user_id: int,
    vote: DuelVoteKind | str,
    *,
    guild_id: int | None = None,
    voter_is_bot: bool = False,
    now: datetime | None = None,
) -> VoteResult:
    """Record ``user_id``'s vote in an open duel (of ``guild_id`` when given).

    One vote per user and duel: the same vote again is ``unchanged``, another one replaces it
    (``changed``). Refused, writing nothing: bots, a user who opted out (or has not opted in
    to an opt-in guild), a duel not posted yet or closed. A vote after the deadline closes the
    duel (refused as ``closed``); a vote that makes ``max_votes`` closes it too (stored): in
    both cases ``closed`` carries the closed duel for the reveal. The duel's row is locked
    until commit, so votes and closing of one duel serialise. DuelNotFound for an unknown
    duel (or another guild's), ValueError for an unknown vote kind.
    """
    kind = _vote_kind(vote)
    if voter_is_bot:
        return VoteResult(VoteOutcome.bot)
    duel = _locked(session, duel_id)
    if guild_id is not None and duel.guild_id != guild_id:
        raise DuelNotFound(f"no duel {duel_id} in this server")
    now = now or utcnow()
    refused = _refusal(session, duel, user_id, now)
    if refused is not None:
        return refused
    outcome = _store_vote(session, duel_id, user_id, kind, now)
    closed = None
    if (
        outcome == VoteOutcome.recorded
        and duel.max_votes is not None
        and tally(session, duel_id).total >= duel.max_votes
    ):
        closed = close_duel(session, duel_id, CloseReason.votes, now)
    return VoteResult(outcome, closed)


def _vote_kind(vote: DuelVoteKind | str) -> DuelVoteKind:
    try:
        return DuelVoteKind(vote)
    except ValueError:
        choices = ", ".join(kind.value for kind in DuelVoteKind)
        raise ValueError(f"unknown vote {vote!r}; use one of {choices}") from None


def _refusal(session: Session, duel: Duel, user_id: int, now: datetime) -> VoteResult | None:
    """Why the vote may not be stored (None: it may), closing an overdue duel on the way."""
    if duel.status == DuelStatus.pending:
        return VoteResult(VoteOutcome.not_open)
    if duel.status == DuelStatus.closed:
        return VoteResult(VoteOutcome.closed)
    if duel.closes_at is not None and duel.closes_at <= now:
        return VoteResult(VoteOutcome.closed, close_duel(session, duel.id, CloseReason.time, now))
    try:
        ensure_user_may_be_stored(session, user_id, duel.guild_id)
    except UserOptedOut:
        return VoteResult(VoteOutcome.opted_out)
    except ConsentRequired:
        return VoteResult(VoteOutcome.consent_required)
    return None


def _store_vote(
    session: Session, duel_id: int, user_id: int, kind: DuelVoteKind, now: datetime
) -> VoteOutcome:
    # The duel's row lock serialises this read and the write below.
    existing = session.scalar(
        select(DuelVote).where(DuelVote.duel_id == duel_id, DuelVote.user_id == user_id)
    )
    if existing is None:
        session.add(
            DuelVote(duel_id=duel_id, user_id=user_id, vote=kind, created_at=now, updated_at=now)
        )
        session.flush()
        return VoteOutcome.recorded
    if existing.vote == kind:
        return VoteOutcome.unchanged
    existing.vote = kind
    existing.updated_at = now
    session.flush()
    return VoteOutcome.changed


# --- closing --------------------------------------------------------------------------------


def close_duel(
    session: Session,
    duel_id: int,
    reason: CloseReason = CloseReason.manual,
    now: datetime | None = None,
) -> ClosedDuel | None:
    """Close a pending or open duel. Exactly one of any number of concurrent closers gets
    the :class:`ClosedDuel` (a conditional UPDATE); the others, and any call on a closed or
    unknown duel, get None."""
    closed = _close_where(session, Duel.id == duel_id, reason, now or utcnow())
    return closed[0] if closed else None


def close_due_duels(
    session: Session, now: datetime | None = None, *, limit: int = 500
) -> list[ClosedDuel]:
    """Close the open duels whose deadline has passed (at most ``limit``, oldest deadline
    first); each is returned to exactly one caller, however many sweeps run at once."""
    now = now or utcnow()
    due = (
        select(Duel.id)
        .where(Duel.status == DuelStatus.open, Duel.closes_at <= now)
        .order_by(Duel.closes_at, Duel.id)
        .limit(limit)
        .scalar_subquery()
    )
    return _close_where(session, Duel.id.in_(due), CloseReason.time, now)


def _close_where(
    session: Session, condition: ColumnElement[bool], reason: CloseReason, now: datetime
) -> list[ClosedDuel]:
    rows = session.execute(
        update(Duel)
        .where(condition, Duel.status != DuelStatus.closed)
        .values(status=DuelStatus.closed, closed_at=now, close_reason=reason.value)
        .returning(
            Duel.id,
            Duel.guild_id,
            Duel.channel_id,
            Duel.message_id,
            Duel.version_a_id,
            Duel.version_b_id,
            Duel.gate_run_id,
        )
        .execution_options(synchronize_session=False)
    ).all()
    return [
        ClosedDuel(
            duel_id=int(row.id),
            guild_id=int(row.guild_id),
            channel_id=int(row.channel_id),
            message_id=row.message_id,
            version_a_id=row.version_a_id,
            version_b_id=row.version_b_id,
            reason=reason,
            closed_at=now,
            tally=tally(session, int(row.id)),
            gate_run_id=row.gate_run_id,
        )
        for row in sorted(rows, key=lambda row: int(row.id))
    ]


# --- reading votes --------------------------------------------------------------------------


def _counts(query: Any) -> dict[tuple[Any, ...], int]:
    return {tuple(row[:-1]): int(row[-1]) for row in query}


def tally(session: Session, duel_id: int) -> Tally:
    """The counted votes of one duel per kind (consent applied)."""
    query = (
        select(DuelVote.vote, func.count())
        .join(Duel, Duel.id == DuelVote.duel_id)
        .where(DuelVote.duel_id == duel_id, duel_vote_consents())
        .group_by(DuelVote.vote)
    )
    counts = {DuelVoteKind(kind).value: n for (kind,), n in _counts(session.execute(query)).items()}
    return Tally(**counts)


def _pairing(version_a: int | None, version_b: int | None) -> ColumnElement[bool]:
    def sides(x: int | None, y: int | None) -> ColumnElement[bool]:
        return and_(
            Duel.version_a_id.is_not_distinct_from(x), Duel.version_b_id.is_not_distinct_from(y)
        )

    return or_(sides(version_a, version_b), sides(version_b, version_a))


def head_to_head(
    session: Session,
    scope: Scope,
    version_a: int | None,
    version_b: int | None,
    *,
    closed_only: bool = True,
    gate_run_id: int | None = None,
) -> Tally:
    """The votes between two configurations (None: the base generator) over every duel of
    ``scope`` that pitted them against each other, whichever side each was drawn on:
    ``a`` counts votes for ``version_a``, ``b`` for ``version_b``. Consent applied; only
    closed duels unless ``closed_only`` is false; only the duels of one human-gate run with
    ``gate_run_id``."""
    query = (
        select(Duel.version_a_id, DuelVote.vote, func.count())
        .join(Duel, Duel.id == DuelVote.duel_id)
        .where(scope.guild_condition(Duel.guild_id), duel_vote_consents())
        .where(_pairing(version_a, version_b))
        .group_by(Duel.version_a_id, DuelVote.vote)
    )
    if closed_only:
        query = query.where(Duel.status == DuelStatus.closed)
    if gate_run_id is not None:
        query = query.where(Duel.gate_run_id == gate_run_id)
    counts = {"a": 0, "b": 0, "tie": 0, "both_bad": 0}
    for (side_a_version, kind), n in _counts(session.execute(query)).items():
        kind = DuelVoteKind(kind)
        if kind in (DuelVoteKind.a, DuelVoteKind.b) and side_a_version != version_a:
            kind = DuelVoteKind.b if kind == DuelVoteKind.a else DuelVoteKind.a  # swapped
        counts[kind.value] += n
    return Tally(**counts)


@dataclass
class RatingVotes:
    """Votes as a rating fit takes them, one entry per counted vote (consent applied,
    both_bad excluded): ``model_a[i]`` and ``model_b[i]`` are the model version ids of the
    sides (:data:`BASE_MODEL_ID` for the base generator), ``outcome[i]`` is 1.0 when A won,
    0.0 when B won, 0.5 for a tie. Arrays of int64/float64 (``numpy.frombuffer`` reads them
    without a copy). ``both_bad`` counts the votes left out."""

    model_a: array[int] = field(default_factory=lambda: array("q"))
    model_b: array[int] = field(default_factory=lambda: array("q"))
    outcome: array[float] = field(default_factory=lambda: array("d"))
    both_bad: int = 0

    def __len__(self) -> int:
        return len(self.outcome)

    @property
    def models(self) -> list[int]:
        """The distinct model ids that appear, ascending."""
        return sorted(set(self.model_a) | set(self.model_b))


OUTCOME = {DuelVoteKind.a: 1.0, DuelVoteKind.b: 0.0, DuelVoteKind.tie: 0.5}


def rating_votes(session: Session, scope: Scope, *, closed_only: bool = True) -> RatingVotes:
    """Every counted vote of ``scope``'s duels as :class:`RatingVotes` (in vote order).
    Only closed duels unless ``closed_only`` is false."""
    query = (
        select(Duel.version_a_id, Duel.version_b_id, DuelVote.vote)
        .join(Duel, Duel.id == DuelVote.duel_id)
        .where(scope.guild_condition(Duel.guild_id), duel_vote_consents())
        .order_by(DuelVote.id)
        .execution_options(yield_per=10_000)
    )
    if closed_only:
        query = query.where(Duel.status == DuelStatus.closed)
    votes = RatingVotes()
    for version_a, version_b, kind in session.execute(query):
        value = OUTCOME.get(DuelVoteKind(kind))
        if value is None:
            votes.both_bad += 1
            continue
        votes.model_a.append(BASE_MODEL_ID if version_a is None else int(version_a))
        votes.model_b.append(BASE_MODEL_ID if version_b is None else int(version_b))
        votes.outcome.append(value)
    return votes


# --- votes as preference data ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportDuelVote:
    """One exportable duel vote (a side or a tie; never both_bad) with what a Pick-a-Pic row
    needs: side A is image 0, side B image 1, ``model_a``/``model_b`` name the configurations
    (:func:`configuration_name`)."""

    vote_id: int
    duel_id: int
    prompt_id: int
    prompt: str
    prompt_hash: str
    split: Split
    user_id: int
    vote: DuelVoteKind
    voted_at: datetime
    image_a_sha256: str
    image_b_sha256: str
    model_a: str
    model_b: str


def configuration_name(generator: str, version_name: str | None) -> str:
    """How exports name a configuration: the generator, plus ``+<version name>`` when a
    model version was applied."""
    return generator if version_name is None else f"{generator}+{version_name}"


EXPORT_VOTE_KINDS = (DuelVoteKind.a, DuelVoteKind.b, DuelVoteKind.tie)
"""The votes exports carry: a side or a tie (both_bad carries no preference)."""


def _exportable_votes(scope: Scope, cutoff: datetime | None) -> Any:
    version_a = ModelVersion.__table__.alias("version_a")
    version_b = ModelVersion.__table__.alias("version_b")
    return (
        closed_duel_votes(
            scope,
            Duel.prompt_id,
            Duel.generator,
            version_a.c.name.label("name_a"),
            version_b.c.name.label("name_b"),
            kinds=EXPORT_VOTE_KINDS,
            voted_by=cutoff,
        )
        .outerjoin(version_a, version_a.c.id == Duel.version_a_id)
        .outerjoin(version_b, version_b.c.id == Duel.version_b_id)
    )


def export_duel_votes_per_prompt(
    session: Session, *, scope: Scope, cutoff: datetime | None = None
) -> dict[int, int]:
    """Per prompt id: how many votes :func:`iter_export_duel_votes` yields (one Pick-a-Pic
    row each)."""
    votes = _exportable_votes(scope, cutoff).subquery()
    query = select(votes.c.prompt_id, func.count()).group_by(votes.c.prompt_id)
    return {int(prompt_id): int(n) for prompt_id, n in session.execute(query)}


def iter_export_duel_votes(
    session: Session,
    *,
    scope: Scope,
    split_salt: str,
    cutoff: datetime | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    batch_size: int = 1000,
) -> Iterator[ExportDuelVote]:
    """Stream the exportable duel votes of ``scope``, ordered by duel then vote: votes for a
    side or a tie (both_bad carries no preference) in closed duels with both images, consent
    applied, last changed at or before ``cutoff`` (:func:`db.datasets.closed_duel_votes`,
    the query training sets use too; here with ties, and the cutoff on the vote rather than
    on the duel's closing). The split is the prompt's (:func:`db.datasets.split_for_prompt`),
    as for choices, so a prompt's duels and choices land in the same split."""
    query = (
        _exportable_votes(scope, cutoff)
        .order_by(DuelVote.duel_id, DuelVote.id)
        .execution_options(yield_per=batch_size)
    )
    splits: dict[str, Split] = {}
    for row in session.execute(query):
        split = splits.get(row.normalized_hash)
        if split is None:
            split = splits[row.normalized_hash] = split_for_prompt(
                row.normalized_hash, split_salt, fractions
            )
        yield ExportDuelVote(
            vote_id=int(row.id),
            duel_id=int(row.duel_id),
            prompt_id=int(row.prompt_id),
            prompt=row.text,
            prompt_hash=row.normalized_hash,
            split=split,
            user_id=int(row.user_id),
            vote=DuelVoteKind(row.vote),
            voted_at=row.updated_at,
            image_a_sha256=row.image_a_sha256,
            image_b_sha256=row.image_b_sha256,
            model_a=configuration_name(row.generator, row.name_a),
            model_b=configuration_name(row.generator, row.name_b),
        )


def configuration_names(session: Session, model_ids: Sequence[int]) -> dict[int, str]:
    """Display names of rating model ids: a model version's name (with its id, since names
    may repeat across guilds) and ``base`` for :data:`BASE_MODEL_ID`."""
    names = {BASE_MODEL_ID: "base"} if BASE_MODEL_ID in model_ids else {}
    wanted = [model_id for model_id in model_ids if model_id != BASE_MODEL_ID]
    if wanted:
        rows = session.execute(
            select(ModelVersion.id, ModelVersion.name).where(ModelVersion.id.in_(wanted))
        )
        names.update({version_id: f"{name} (#{version_id})" for version_id, name in rows})
    for model_id in wanted:
        names.setdefault(model_id, f"version #{model_id}")
    return names
