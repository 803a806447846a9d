"""Choice sets for training and evaluation, split deterministically **by prompt**.

A prompt's split depends only on its normalised hash and a salt, so every image set of one
prompt lands in the same split, the split of a prompt never changes as data grows, and a model
is never evaluated on a prompt it was trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from db.models import Choice, Generation, Image, Prompt
from db.scope import Scope

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


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
    """One human choice among the images of one generation."""

    choice_id: int
    generation_id: int
    user_id: int
    prompt: str
    prompt_hash: str
    image_sha256s: tuple[str, ...]
    storage_keys: tuple[str, ...]
    chosen_index: int
    split: Split
    chosen_at: datetime


def iter_choice_sets(
    session: Session,
    *,
    scope: Scope,
    salt: str,
    split: Split | None = None,
    cutoff: datetime | None = None,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    batch_size: int = 500,
) -> Iterator[ChoiceSet]:
    """Stream every usable choice (a pick, not a skip) made up to ``cutoff``, in choice-id
    order, optionally only those of one split, of the generations ``scope`` may use (a
    guild's own; pooled guilds' for the operators). Consent is :mod:`db.consent`'s: nothing
    of users who opted out, as choosers or requesters."""
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
