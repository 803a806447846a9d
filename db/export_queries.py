"""What a dataset export may contain, streamed in generation order, scope and consent applied.

An export is a guild's (its admins') or the operators' (the guilds that pool their data, see
:mod:`db.scope`). An exported choice is a pick (or a skip) allowed by :mod:`db.consent`: by a
user who has not opted out, on a generation of at least two images whose requester has not
opted out either (the prompt is the requester's words). Users who asked to be forgotten have
no rows left, so nothing of theirs can appear.
Rows come ordered by generation, then choice, so that an exporter reading image bytes can
reuse them for every choice on the same generation.

Run every query of one export in one transaction (:func:`begin_snapshot` makes it a
repeatable-read snapshot on PostgreSQL), so that the counts and the rows agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from db.datasets import DEFAULT_FRACTIONS, Split, split_for_prompt
from db.models import Choice, DiscordUser, Generation, GuildConfig, Image, Prompt
from db.scope import Scope

MIN_IMAGES_PER_SET = 2


@dataclass(frozen=True, slots=True)
class ExportImage:
    """One image of an exported generation."""

    image_id: int
    position: int
    sha256: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class ExportChoice:
    """One exportable choice with its generation, prompt, split and images (by position)."""

    choice_id: int
    generation_id: int
    prompt_id: int
    prompt: str
    prompt_hash: str
    split: Split
    generator: str
    generation_params: dict[str, Any]
    generation_created_at: datetime
    user_id: int
    chosen_index: int | None  # None: a skip, no image preferred
    method: str
    chosen_at: datetime
    images: tuple[ExportImage, ...]


@dataclass
class PromptStats:
    """Per prompt: exportable choices and the pairwise rows they make (Pick-a-Pic)."""

    choices: int = 0
    pair_rows: int = 0


@dataclass
class ExportPlan:
    """Totals of an export, known before its rows are read."""

    prompts: dict[int, PromptStats] = field(default_factory=dict)

    @property
    def choices(self) -> int:
        """Exportable choices in total."""
        return sum(stats.choices for stats in self.prompts.values())

    @property
    def pair_rows(self) -> int:
        """Pick-a-Pic rows in total."""
        return sum(stats.pair_rows for stats in self.prompts.values())


def begin_snapshot(session: Session) -> None:
    """Start the session's transaction as a read-only repeatable-read snapshot (PostgreSQL);
    on SQLite a plain transaction is already a consistent snapshot for one reader."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(
            execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
        )


def _image_counts() -> Any:
    return (
        select(Image.generation_id, func.count().label("n"))
        .group_by(Image.generation_id)
        .subquery("image_counts")
    )


def _exportable(query: Any, cutoff: datetime | None, include_skips: bool, scope: Scope) -> Any:
    query = query.join(Generation, Choice.generation_id == Generation.id).where(scope.choices())
    if cutoff is not None:
        query = query.where(Choice.updated_at <= cutoff)
    if not include_skips:
        query = query.where(Choice.chosen_image_id.is_not(None))
    return query


def plan_export(
    session: Session,
    *,
    cutoff: datetime | None = None,
    include_skips: bool = True,
    scope: Scope,
) -> ExportPlan:
    """Choices and Pick-a-Pic rows per prompt: a pick among n images makes n - 1 rows
    (chosen vs each other image), a skip makes n(n-1)/2 tie rows."""
    counts = _image_counts()
    n = counts.c.n
    rows_expr = case((Choice.chosen_image_id.is_(None), n * (n - 1) // 2), else_=n - 1)
    query = _exportable(
        select(Generation.prompt_id, func.count(Choice.id), func.sum(rows_expr)).select_from(
            Choice
        ),
        cutoff,
        include_skips,
        scope,
    )
    query = query.join(counts, counts.c.generation_id == Generation.id).where(
        n >= MIN_IMAGES_PER_SET
    )
    plan = ExportPlan()
    for prompt_id, choices, rows in session.execute(query.group_by(Generation.prompt_id)):
        plan.prompts[int(prompt_id)] = PromptStats(int(choices), int(rows or 0))
    return plan


def iter_export_choices(
    session: Session,
    *,
    split_salt: str,
    cutoff: datetime | None = None,
    include_skips: bool = True,
    scope: Scope,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    batch_size: int = 500,
) -> Iterator[ExportChoice]:
    """Stream the exportable choices ordered by generation then choice, each with its split
    (by prompt, :func:`db.datasets.split_for_prompt`) and its images in position order,
    of the generations ``scope`` may use (a guild's; the pooled guilds' for the operators).
    Choices on sets of fewer than two images are
    left out (they carry no preference)."""
    query = _exportable(
        select(
            Choice.id,
            Choice.generation_id,
            Choice.user_id,
            Choice.chosen_image_id,
            Choice.method,
            Choice.updated_at,
            Generation.prompt_id,
            Generation.generator,
            Generation.params,
            Generation.created_at.label("generation_created_at"),
            Prompt.text,
            Prompt.normalized_hash,
        ).select_from(Choice),
        cutoff,
        include_skips,
        scope,
    )
    query = (
        query.join(Prompt, Generation.prompt_id == Prompt.id)
        .order_by(Choice.generation_id, Choice.id)
        .execution_options(yield_per=batch_size)
    )
    pending: list[Any] = []
    for row in session.execute(query):
        pending.append(row)
        if len(pending) >= batch_size:
            yield from _with_images(session, pending, split_salt, fractions)
            pending = []
    if pending:
        yield from _with_images(session, pending, split_salt, fractions)


def _with_images(
    session: Session,
    rows: list[Any],
    split_salt: str,
    fractions: tuple[float, float, float],
) -> Iterator[ExportChoice]:
    images: dict[int, list[ExportImage]] = {}
    for image_id, generation_id, position, sha, width, height in session.execute(
        select(
            Image.id, Image.generation_id, Image.position, Image.sha256, Image.width, Image.height
        )
        .where(Image.generation_id.in_({row.generation_id for row in rows}))
        .order_by(Image.generation_id, Image.position)
    ):
        images.setdefault(generation_id, []).append(
            ExportImage(int(image_id), int(position), sha, int(width), int(height))
        )
    splits: dict[str, Split] = {}
    for row in rows:
        members = images.get(row.generation_id, [])
        if len(members) < MIN_IMAGES_PER_SET:
            continue
        chosen_index: int | None = None
        if row.chosen_image_id is not None:
            ids = [member.image_id for member in members]
            if row.chosen_image_id not in ids:
                continue
            chosen_index = ids.index(row.chosen_image_id)
        split = splits.get(row.normalized_hash)
        if split is None:
            split = splits[row.normalized_hash] = split_for_prompt(
                row.normalized_hash, split_salt, fractions
            )
        yield ExportChoice(
            choice_id=int(row.id),
            generation_id=int(row.generation_id),
            prompt_id=int(row.prompt_id),
            prompt=row.text,
            prompt_hash=row.normalized_hash,
            split=split,
            generator=row.generator,
            generation_params=dict(row.params or {}),
            generation_created_at=row.generation_created_at,
            user_id=int(row.user_id),
            chosen_index=chosen_index,
            method=str(getattr(row.method, "value", row.method)),
            chosen_at=row.updated_at,
            images=tuple(members),
        )


def consent_modes(session: Session, scope: Scope) -> dict[str, int]:
    """How many guilds of ``scope`` harvest in each consent mode (for the dataset card)."""
    query = (
        select(GuildConfig.consent_mode, func.count())
        .where(scope.guild_condition(GuildConfig.guild_id))
        .group_by(GuildConfig.consent_mode)
    )
    rows = session.execute(query)
    return {str(getattr(mode, "value", mode)): int(count) for mode, count in rows}


def opted_out_users(session: Session) -> int:
    """How many users are opted out (their data is never exported)."""
    return int(
        session.scalar(
            select(func.count()).select_from(DiscordUser).where(DiscordUser.opted_out.is_(True))
        )
        or 0
    )
