"""Choice sets for training and evaluation, split deterministically **by prompt**.

A prompt's split depends only on its normalised hash and a salt, so every image set of one
prompt lands in the same split, the split of a prompt never changes as data grows, and a model
is never evaluated on a prompt it was trained on.

Two sources feed the same :class:`ChoiceSet` stream (:func:`iter_choice_sets`): picks among a
generation's images (``choices``) and, unless turned off, the votes of closed arena duels
(``duel_votes``, :func:`iter_duel_choice_sets`): a vote for side A or B is a two-image set of
the duel's prompt whose chosen image is that side's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from db.consent import user_consents
from db.models import (
    Choice,
    Duel,
    DuelStatus,
    DuelVote,
    DuelVoteKind,
    Generation,
    Image,
    Prompt,
)
from db.scope import Scope

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)
ChoiceSource = Literal["choice", "duel_vote"]
DUEL_SIDES = {DuelVoteKind.a: 0, DuelVoteKind.b: 1}
"""A duel vote's chosen index: side A is image 0, side B image 1 (as in the Pick-a-Pic
export). Ties and both_bad name no preferred image and are not training sets."""


def split_for_prompt(
    normalized_hash: str, salt: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> Split:
    """The split a prompt belongs to (stable for a given salt and fractions)."""
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    digest = hashlib.sha256(f"{salt}:{normalized_hash}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for split, fraction in zip(SPLITS, fractions, strict=True):
        cumulative += fraction
        if position < cumulative:
            return split
    return SPLITS[-1]


@dataclass(frozen=True, slots=True)
class ChoiceSet:
    """One human choice among the images of one generation, or one user's vote in a closed
    arena duel (``source`` ``duel_vote``: ``choice_id`` is the vote's id, ``duel_id`` its
    duel's, ``generation_id`` None, the images are sides A and B)."""

    choice_id: int
    generation_id: int | None
    user_id: int
    prompt: str
    prompt_hash: str
    image_sha256s: tuple[str, ...]
    storage_keys: tuple[str, ...]
    chosen_index: int
    split: Split
    chosen_at: datetime
    source: ChoiceSource = "choice"
    duel_id: int | None = None

    @property
    def key(self) -> str:
        """Unique across both sources: ``choice:<id>`` or ``duel_vote:<id>`` (for digests
        of a snapshot)."""
        return f"{self.source}:{self.choice_id}"


def iter_choice_sets(
    session: Session,
    *,
    scope: Scope,
    salt: str,
    split: Split | None = None,
    cutoff: datetime | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    batch_size: int = 500,
    duel_votes: bool = True,
) -> Iterator[ChoiceSet]:
    """Stream every usable choice (a pick, not a skip) made up to ``cutoff``, in choice-id
    order, optionally only those of one split, of the generations ``scope`` may use (a
    guild's own; pooled guilds' for the operators). Consent is :mod:`db.consent`'s: nothing
    of users who opted out, as choosers or requesters.

    Then, when ``duel_votes`` (the default), the votes of ``scope``'s closed arena duels as
    two-image sets (:func:`iter_duel_choice_sets`, the same scope, consent, split and
    cutoff rules)."""
    yield from _iter_generation_choices(
        session,
        scope=scope,
        salt=salt,
        split=split,
        cutoff=cutoff,
        fractions=fractions,
        batch_size=batch_size,
    )
    if duel_votes:
        yield from iter_duel_choice_sets(
            session,
            scope=scope,
            salt=salt,
            split=split,
            cutoff=cutoff,
            fractions=fractions,
            batch_size=batch_size,
        )


def _iter_generation_choices(
    session: Session,
    *,
    scope: Scope,
    salt: str,
    split: Split | None,
    cutoff: datetime | None,
    fractions: tuple[float, float, float],
    batch_size: int,
) -> Iterator[ChoiceSet]:
    query = (
        select(
            Choice.id,
            Choice.generation_id,
            Choice.user_id,
            Choice.chosen_image_id,
            Choice.updated_at,
            Prompt.text,
            Prompt.normalized_hash,
        )
        .join(Generation, Choice.generation_id == Generation.id)
        .join(Prompt, Generation.prompt_id == Prompt.id)
        .where(Choice.chosen_image_id.is_not(None), scope.choices())
        .order_by(Choice.id)
        .execution_options(yield_per=batch_size)
    )
    if cutoff is not None:
        query = query.where(Choice.updated_at <= cutoff)
    pending: list[tuple[Row[Any], Split]] = []
    for row in session.execute(query):
        row_split = split_for_prompt(row.normalized_hash, salt, fractions)
        if split is not None and row_split != split:
            continue
        pending.append((row, row_split))  # type: ignore[arg-type]
        if len(pending) >= batch_size:
            yield from _attach_images(session, pending)
            pending = []
    if pending:
        yield from _attach_images(session, pending)


def duel_vote_consents() -> ColumnElement[bool]:
    """Consent of a duel vote (the query joins ``DuelVote`` and ``Duel``): neither the voter,
    nor the duel's requester, nor the author of a scheduled duel's prompt opted out (the
    prompt is the requester's or the author's words)."""
    return (
        user_consents(DuelVote.user_id)
        & user_consents(Duel.requested_by)
        & user_consents(Duel.prompt_author_id)
    )


def closed_duel_votes(
    scope: Scope,
    *columns: Any,
    kinds: Collection[DuelVoteKind],
    closed_by: datetime | None = None,
    voted_by: datetime | None = None,
    storage_keys: bool = False,
    distinct_images: bool = False,
) -> Select[Any]:
    """The query of duel votes that data may use (training sets, exports): one row per vote
    in a **closed** duel of ``scope`` (guild scope: :meth:`db.scope.Scope.guild_condition`)
    whose two images are stored, with consent (:func:`duel_vote_consents`: not of a voter,
    a requester or a prompt author who opted out), of one of ``kinds``.

    Each row has ``id``, ``duel_id``, ``user_id``, ``vote`` and ``updated_at`` of the vote,
    the duel's ``image_a_sha256`` and ``image_b_sha256``, the prompt's ``text`` and
    ``normalized_hash``, then ``columns`` (of the duel or the vote, or of tables the caller
    joins on). Unordered: callers order and batch.

    Where callers differ: ``closed_by`` keeps duels closed at or before it (a snapshot at a
    cutoff is reproducible), ``voted_by`` votes last changed at or before it;
    ``storage_keys`` also needs both images' storage keys (to load them), and
    ``distinct_images`` two different images (the same image twice carries no preference).
    """
    query = (
        select(
            DuelVote.id,
            DuelVote.duel_id,
            DuelVote.user_id,
            DuelVote.vote,
            DuelVote.updated_at,
            Duel.image_a_sha256,
            Duel.image_b_sha256,
            Prompt.text,
            Prompt.normalized_hash,
            *columns,
        )
        .join(Duel, Duel.id == DuelVote.duel_id)
        .join(Prompt, Prompt.id == Duel.prompt_id)
        .where(scope.guild_condition(Duel.guild_id), duel_vote_consents())
        .where(Duel.status == DuelStatus.closed, DuelVote.vote.in_(list(kinds)))
        .where(Duel.image_a_sha256.is_not(None), Duel.image_b_sha256.is_not(None))
    )
    if storage_keys:
        query = query.where(Duel.image_a_key.is_not(None), Duel.image_b_key.is_not(None))
    if distinct_images:
        query = query.where(Duel.image_a_sha256 != Duel.image_b_sha256)
    if closed_by is not None:
        query = query.where(Duel.closed_at <= closed_by)
    if voted_by is not None:
        query = query.where(DuelVote.updated_at <= voted_by)
    return query


def iter_duel_choice_sets(
    session: Session,
    *,
    scope: Scope,
    salt: str,
    split: Split | None = None,
    cutoff: datetime | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    batch_size: int = 500,
) -> Iterator[ChoiceSet]:
    """Stream the votes of ``scope``'s closed arena duels as pairwise choice sets, ordered by
    duel then vote: the duel's prompt, images (side A, side B) and the chosen side.

    **One set per vote, not one per duel.** The paper's loss is a softmax cross-entropy per
    human choice; several voters' one-hot choices on the same pair sum to the cross-entropy
    against the pair's empirical vote share, so the model learns how strongly a community
    prefers a side (a 9-1 duel weighs more than a 6-4 one), which a per-duel majority would
    flatten to one hard label and lose for a split vote. It is also how generation choices
    are used (every user's pick is its own set). The one vote per user and duel is
    :func:`db.arena.record_vote`'s (the latest, changeable until the duel closed).

    Left out: ties and both_bad (no preferred image), votes of duels not closed (still
    changing; with ``cutoff``, duels closed after it, so a snapshot at a cutoff is
    reproducible), duels without two distinct images, other scopes' duels (guild scope as
    for choices: :meth:`db.scope.Scope.guild_condition`), and votes of users who opted out or
    in duels whose requester or prompt author did (:func:`duel_vote_consents`); the query is
    :func:`closed_duel_votes`, as for exports. Forgotten users' votes and duels are deleted,
    so never appear. The split is the prompt's, as for choices."""
    query = (
        closed_duel_votes(
            scope,
            Duel.image_a_key,
            Duel.image_b_key,
            kinds=DUEL_SIDES.keys(),
            closed_by=cutoff,
            storage_keys=True,
            distinct_images=True,
        )
        .order_by(DuelVote.duel_id, DuelVote.id)
        .execution_options(yield_per=batch_size)
    )
    for row in session.execute(query):
        row_split = split_for_prompt(row.normalized_hash, salt, fractions)
        if split is not None and row_split != split:
            continue
        yield ChoiceSet(
            choice_id=int(row.id),
            generation_id=None,
            user_id=int(row.user_id),
            prompt=row.text,
            prompt_hash=row.normalized_hash,
            image_sha256s=(row.image_a_sha256, row.image_b_sha256),
            storage_keys=(row.image_a_key, row.image_b_key),
            chosen_index=DUEL_SIDES[DuelVoteKind(row.vote)],
            split=row_split,
            chosen_at=row.updated_at,
            source="duel_vote",
            duel_id=int(row.duel_id),
        )


def _attach_images(session: Session, rows: list[tuple[Row[Any], Split]]) -> Iterator[ChoiceSet]:
    generation_ids = {row.generation_id for row, _ in rows}
    images: dict[int, list[tuple[int, str, str]]] = {}
    for image_id, generation_id, sha, key in session.execute(
        select(Image.id, Image.generation_id, Image.sha256, Image.storage_key)
        .where(Image.generation_id.in_(generation_ids))
        .order_by(Image.generation_id, Image.position)
    ):
        images.setdefault(generation_id, []).append((image_id, sha, key))
    for row, row_split in rows:
        members = images.get(row.generation_id, [])
        ids = [member[0] for member in members]
        if row.chosen_image_id not in ids or len(ids) < 2:
            continue  # a one-image set carries no preference
        yield ChoiceSet(
            choice_id=row.id,
            generation_id=row.generation_id,
            user_id=row.user_id,
            prompt=row.text,
            prompt_hash=row.normalized_hash,
            image_sha256s=tuple(member[1] for member in members),
            storage_keys=tuple(member[2] for member in members),
            chosen_index=ids.index(row.chosen_image_id),
            split=row_split,
            chosen_at=row.updated_at,
        )
