"""The community's harvested image sets, for adapting Stable Diffusion from them.

A set is one generation in scope whose requester consents (``Scope.generations``), with at
least ``min_images`` images, and the positions its consenting members picked
(``Scope.choices``). Sets of held-out prompts (the ``test`` split of ``db.datasets``) are left
out: those prompts judge the adaptation, they never train it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.datasets import split_for_prompt
from db.models import Choice, Generation, Image, Prompt
from db.scope import Scope


@dataclass(frozen=True)
class StoredSet:
    """One harvested generation: its prompt, its images' sha256 in position order, and the
    positions people picked (one entry per pick)."""

    generation_id: int
    prompt: str
    image_sha256s: tuple[str, ...]
    picked: tuple[int, ...]


def _large_generations(min_images: int) -> Select[int]:
    """SELECT of the ids of generations with at least ``min_images`` images."""
    return (
        select(Image.generation_id)
        .group_by(Image.generation_id)
        .having(func.count(Image.id) >= min_images)
    )


def harvested_sets(
    session: Session, scope: Scope, salt: str, *, min_images: int, limit: int
) -> list[StoredSet]:
    """The scope's most recent ``limit`` generations with ``min_images``+ images (consent
    applied), less those of held-out prompts, newest first."""
    rows = session.execute(
        select(Generation.id, Prompt.text, Prompt.normalized_hash)
        .join(Prompt, Prompt.id == Generation.prompt_id)
        .where(scope.generations(), Generation.id.in_(_large_generations(min_images)))
        .order_by(Generation.id.desc())
        .limit(limit)
    ).all()
    kept = [(gid, text) for gid, text, digest in rows if split_for_prompt(digest, salt) != "test"]
    ids = [gid for gid, _ in kept]
    if not ids:
        return []
    images: dict[int, list[str]] = defaultdict(list)
    for generation_id, sha256 in session.execute(
        select(Image.generation_id, Image.sha256)
        .where(Image.generation_id.in_(ids))
        .order_by(Image.generation_id, Image.position)
    ):
        images[generation_id].append(sha256)
    picks = _picked_positions(session, scope, ids)
    return [StoredSet(gid, text, tuple(images[gid]), picks.get(gid, ())) for gid, text in kept]


def _picked_positions(session: Session, scope: Scope, ids: list[int]) -> dict[int, tuple[int, ...]]:
    """Per generation, the positions its consenting members picked (index in the set)."""
    ranked = (
        select(
            Image.id,
            Image.generation_id,
            func.row_number()
            .over(partition_by=Image.generation_id, order_by=Image.position)
            .label("index"),
        )
        .where(Image.generation_id.in_(ids))
        .subquery()
    )
    rows = session.execute(
        select(Choice.generation_id, ranked.c.index)
        .join(Generation, Generation.id == Choice.generation_id)
        .join(ranked, ranked.c.id == Choice.chosen_image_id)
        .where(Choice.generation_id.in_(ids), scope.choices())
        .order_by(Choice.generation_id, Choice.id)
    ).all()
    picks: dict[int, list[int]] = defaultdict(list)
    for generation_id, index in rows:
        picks[generation_id].append(int(index) - 1)
    return {gid: tuple(positions) for gid, positions in picks.items()}


def distinct_prompts(sets: list[StoredSet]) -> int:
    """How many different prompts the sets hold."""
    return len({s.prompt for s in sets})
