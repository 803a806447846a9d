"""Idempotent ingest of generations and choices, with consent enforced at the door.

These functions take a Session inside the caller's transaction and plain ids; they never
commit. Every statement is an ``INSERT ... ON CONFLICT`` keyed on a natural key (message id,
(generation, position), (generation, user), prompt hash), so a replayed or concurrent event
leaves exactly one row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, bindparam, delete, false, select
from sqlalchemy.orm import Session

from db.errors import (
    ConsentRequired,
    InvalidGeneration,
    UnknownGeneration,
    UnknownImage,
    UserOptedOut,
)
from db.models import (
    Choice,
    ChoiceMethod,
    ConsentMode,
    DiscordUser,
    Generation,
    GuildConfig,
    Image,
    Prompt,
    utcnow,
)
from db.prompts import MAX_PROMPT_CHARS, prompt_hash
from db.upsert import insert_for_dialect

MAX_IMAGES_PER_GENERATION = 16


@dataclass(frozen=True, slots=True)
class ImageIn:
    """An image already stored in the blob store (see media.intake / media.store)."""

    sha256: str
    storage_key: str
    width: int
    height: int
    phash: str = ""
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationIn:
    """One set of images produced for one prompt, as observed on Discord or made by a job."""

    source_message_id: int
    channel_id: int
    prompt: str
    generator: str
    images: list[ImageIn]
    requester_id: int | None = None
    guild_id: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RecordedGeneration:
    generation_id: int
    prompt_id: int
    image_ids: list[int]


@dataclass(frozen=True)
class _IngestStatements:
    """The ingest statements of one dialect, built once: constructing an upsert (its
    ``excluded`` alias especially) costs more than executing it."""

    user: Any
    prompt: Any
    generation: Any
    images: Any
    choice: Any


@lru_cache(maxsize=4)
def _statements(dialect: str) -> _IngestStatements:
    users = insert_for_dialect(dialect, DiscordUser)
    consent_mode = (
        select(GuildConfig.consent_mode)
        .where(GuildConfig.guild_id == bindparam("consent_guild_id"))
        .scalar_subquery()
    )
    prompts = insert_for_dialect(dialect, Prompt)
    generations = insert_for_dialect(dialect, Generation)
    images = insert_for_dialect(dialect, Image)
    choices = insert_for_dialect(dialect, Choice)
    return _IngestStatements(
        # DO UPDATE (not DO NOTHING) so that RETURNING always yields the row, and so the row
        # stays locked until commit: a concurrent opt-out waits for this transaction.
        user=users.on_conflict_do_update(
            index_elements=["id"], set_={"id": users.excluded.id}
        ).returning(users.table.c.opted_out, users.table.c.opted_in_at, consent_mode),
        prompt=prompts.on_conflict_do_update(
            index_elements=["normalized_hash"],
            set_={"normalized_hash": prompts.excluded.normalized_hash},
        ).returning(prompts.table.c.id),
        generation=generations.on_conflict_do_update(
            index_elements=["source_message_id"],
            set_={"source_message_id": generations.excluded.source_message_id},
        ).returning(generations.table.c.id, generations.table.c.prompt_id),
        images=images.on_conflict_do_nothing(
            index_elements=["generation_id", "position"]
        ).returning(images.table.c.id, sort_by_parameter_order=True),
        # A newer pick replaces the stored one; an older (replayed) event changes nothing
        # and returns no row.
        choice=choices.on_conflict_do_update(
            index_elements=["generation_id", "user_id"],
            set_={
                "chosen_image_id": choices.excluded.chosen_image_id,
                "method": choices.excluded.method,
                "source_message_id": choices.excluded.source_message_id,
                "updated_at": choices.excluded.updated_at,
            },
            where=choices.table.c.updated_at <= choices.excluded.updated_at,
        ).returning(choices.table.c.id),
    )


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def ensure_user_may_be_stored(session: Session, user_id: int, guild_id: int | None) -> None:
    """Create the user row if needed and refuse users who opted out (or, in an opt-in
    guild, who never opted in). Locks the user row for the rest of the transaction so a
    concurrent opt-out cannot interleave."""
    opted_out, opted_in_at, consent_mode = session.execute(
        _statements(_dialect(session)).user,
        {"id": user_id, "created_at": utcnow(), "consent_guild_id": guild_id},
    ).one()
    if opted_out:
        raise UserOptedOut(user_id)
    if guild_id is not None and opted_in_at is None and consent_mode == ConsentMode.opt_in:
        raise ConsentRequired(user_id, guild_id)


def may_be_stored(session: Session, user_id: int, guild_id: int | None) -> bool:
    """A read-only pre-check (nothing written): False for a user who opted out, or who never
    opted in to an opt-in guild. ``record_generation`` enforces the same rule under lock."""
    row = session.execute(
        select(DiscordUser.opted_out, DiscordUser.opted_in_at).where(DiscordUser.id == user_id)
    ).one_or_none()
    if row is not None and row.opted_out:
        return False
    if guild_id is None or (row is not None and row.opted_in_at is not None):
        return True
    mode = session.scalar(select(GuildConfig.consent_mode).where(GuildConfig.guild_id == guild_id))
    return mode != ConsentMode.opt_in


def harvest_precheck(
    session: Session, message_id: int, user_id: int | None, guild_id: int | None
) -> tuple[int | None, bool]:
    """Before downloading a generator message's images: the generation already recorded for
    ``message_id`` (a replay or a backfill over known ground), and whether the requester may
    be stored at all. Read-only."""
    existing = session.scalar(
        select(Generation.id).where(Generation.source_message_id == message_id)
    )
    allowed = user_id is None or may_be_stored(session, user_id, guild_id)
    return (int(existing) if existing is not None else None), allowed


def upsert_prompt(session: Session, text: str) -> int:
    """The id of the prompt row for ``text`` (normalised), creating it if needed."""
    if not text.strip():
        raise InvalidGeneration("the prompt is empty")
    text = text[:MAX_PROMPT_CHARS]
    return int(
        session.execute(
            _statements(_dialect(session)).prompt,
            {"text": text, "normalized_hash": prompt_hash(text), "created_at": utcnow()},
        ).scalar_one()
    )


def record_generation(session: Session, generation: GenerationIn) -> RecordedGeneration:
    """Record a generation and its images; a replay returns the existing ids.

    Raises UserOptedOut / ConsentRequired for a requester who must not be stored and
    InvalidGeneration for an empty or oversized image set.
    """
    if not generation.images:
        raise InvalidGeneration("a generation needs at least one image")
    if len(generation.images) > MAX_IMAGES_PER_GENERATION:
        raise InvalidGeneration(
            f"{len(generation.images)} images; at most {MAX_IMAGES_PER_GENERATION} per generation"
        )
    statements = _statements(_dialect(session))
    if generation.requester_id is not None:
        ensure_user_may_be_stored(session, generation.requester_id, generation.guild_id)
    prompt_id = upsert_prompt(session, generation.prompt)
    created_at = generation.created_at or utcnow()
    generation_id, stored_prompt_id = session.execute(
        statements.generation,
        {
            "source_message_id": generation.source_message_id,
            "guild_id": generation.guild_id,
            "channel_id": generation.channel_id,
            "prompt_id": prompt_id,
            "requester_id": generation.requester_id,
            "generator": generation.generator[:128],
            "params": generation.params,
            "created_at": created_at,
        },
    ).one()
    rows = [
        {
            "generation_id": generation_id,
            "position": position,
            "sha256": image.sha256,
            "storage_key": image.storage_key,
            "width": image.width,
            "height": image.height,
            "phash": image.phash,
            "seed": image.seed,
            "created_at": created_at,
        }
        for position, image in enumerate(generation.images)
    ]
    image_ids = list(session.scalars(statements.images, rows))
    if len(image_ids) != len(rows):  # a replay: some or all rows existed already
        image_ids = list(
            session.scalars(
                select(Image.id)
                .where(Image.generation_id == generation_id)
                .order_by(Image.position)
            )
        )
    return RecordedGeneration(int(generation_id), int(stored_prompt_id), image_ids)


@dataclass(frozen=True, slots=True)
class ChoiceIn:
    """A user's pick: ``position`` is the index of the image in its generation (0-based);
    None records a skip. ``at`` is when the user acted (orders replays)."""

    user_id: int
    position: int | None
    method: ChoiceMethod
    generation_id: int | None = None
    generation_message_id: int | None = None
    choice_message_id: int | None = None
    at: datetime | None = None


def resolve_generation_id(
    session: Session, generation_id: int | None, message_id: int | None
) -> int:
    """Find a generation by id or by its source message id; raise UnknownGeneration."""
    if generation_id is not None:
        found = session.scalar(select(Generation.id).where(Generation.id == generation_id))
    elif message_id is not None:
        found = session.scalar(
            select(Generation.id).where(Generation.source_message_id == message_id)
        )
    else:
        raise UnknownGeneration("a choice needs a generation id or its message id")
    if found is None:
        raise UnknownGeneration(
            f"no generation recorded for {'id' if generation_id is not None else 'message'} "
            f"{generation_id if generation_id is not None else message_id}"
        )
    return int(found)


def record_choice(session: Session, choice: ChoiceIn) -> int:
    """Record (or replace) one user's pick in a generation; return the choice id.

    One row per (generation, user): a new pick replaces the old one, unless the stored pick
    is newer than ``choice.at`` (a replayed, older event never overrides a later click).
    Three statements: the generation with its guild and the chosen image, the user (consent),
    the upsert.
    """
    generation_id, guild_id, image_id = _choice_target(session, choice)
    ensure_user_may_be_stored(session, choice.user_id, guild_id)
    at = choice.at or utcnow()
    choice_id = session.execute(
        _statements(_dialect(session)).choice,
        {
            "generation_id": generation_id,
            "user_id": choice.user_id,
            "chosen_image_id": image_id,
            "method": choice.method,
            "source_message_id": choice.choice_message_id,
            "created_at": at,
            "updated_at": at,
        },
    ).scalar_one_or_none()
    if choice_id is None:  # a newer pick is stored: keep it
        choice_id = session.scalar(
            select(Choice.id).where(
                Choice.generation_id == generation_id, Choice.user_id == choice.user_id
            )
        )
    assert choice_id is not None
    return int(choice_id)


def generation_requester(session: Session, source_message_id: int) -> int | None:
    """Who asked for the generation posted as ``source_message_id`` (None: unknown
    generation, or no requester recorded)."""
    return session.scalar(
        select(Generation.requester_id).where(Generation.source_message_id == source_message_id)
    )


def reaction_choice_exists(session: Session, generation_message_id: int, user_id: int) -> bool:
    """Whether ``user_id`` picked by reaction in the generation posted as that message."""
    found = session.scalar(
        select(Choice.id)
        .join(Generation, Generation.id == Choice.generation_id)
        .where(
            Generation.source_message_id == generation_message_id,
            Choice.user_id == user_id,
            Choice.method == ChoiceMethod.reaction,
        )
    )
    return found is not None


def sync_reaction_choice(
    session: Session, generation_message_id: int, user_id: int, positions: list[int]
) -> int | None:
    """Make ``user_id``'s pick on the generation posted as ``generation_message_id`` what
    their number reactions on it say now (``positions``: the images they still react with).

    None left: a pick made by reaction is withdrawn. Several: the stored pick stays while its
    reaction does, else the lowest-numbered one is the pick. Returns the choice id, or None
    when no pick remains. Raises UnknownGeneration like :func:`record_choice`."""
    generation_id = session.scalar(
        select(Generation.id).where(Generation.source_message_id == generation_message_id)
    )
    if generation_id is None:
        raise UnknownGeneration(f"no generation recorded for message {generation_message_id}")
    current = session.execute(
        select(Choice.id, Choice.method, Image.position)
        .outerjoin(Image, Image.id == Choice.chosen_image_id)
        .where(Choice.generation_id == generation_id, Choice.user_id == user_id)
    ).one_or_none()
    reaction_pick = current is not None and current.method == ChoiceMethod.reaction
    if not positions:
        if current is not None and reaction_pick:
            session.execute(delete(Choice).where(Choice.id == current.id))
            return None
        return int(current.id) if current is not None else None
    if current is not None and reaction_pick and current.position in positions:
        return int(current.id)
    choice = ChoiceIn(
        user_id=user_id,
        position=min(positions),
        method=ChoiceMethod.reaction,
        generation_id=generation_id,
    )
    return record_choice(session, choice)


def _choice_target(session: Session, choice: ChoiceIn) -> tuple[int, int | None, int | None]:
    """(generation id, its guild, the chosen image id) in one query; raise UnknownGeneration
    or UnknownImage."""
    if choice.generation_id is not None:
        key = Generation.id == choice.generation_id
    elif choice.generation_message_id is not None:
        key = Generation.source_message_id == choice.generation_message_id
    else:
        raise UnknownGeneration("a choice needs a generation id or its message id")
    image_match = and_(Image.generation_id == Generation.id, Image.position == choice.position)
    row = session.execute(
        select(Generation.id, Generation.guild_id, Image.id)
        .outerjoin(Image, image_match if choice.position is not None else false())
        .where(key)
    ).one_or_none()
    if row is None:
        which = (
            f"id {choice.generation_id}"
            if choice.generation_id is not None
            else f"message {choice.generation_message_id}"
        )
        raise UnknownGeneration(f"no generation recorded for {which}")
    generation_id, guild_id, image_id = row
    if choice.position is not None and image_id is None:
        raise UnknownImage(f"generation {generation_id} has no image #{choice.position + 1}")
    return int(generation_id), guild_id, image_id
