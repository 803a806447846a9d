"""Stored scores: idempotent writes, the images still to score, and percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from db.models import Generation, Image, Prompt, Score, utcnow
from db.upsert import insert_for


def store_scores(session: Session, model_version_id: int, scores: dict[int, float]) -> int:
    """Write image scores for a model version; existing (image, version) rows are kept, so a
    redelivered task writes nothing twice. Return the number of new rows."""
    if not scores:
        return 0
    stmt = insert_for(session, Score).on_conflict_do_nothing(
        index_elements=["image_id", "model_version_id"]
    )
    now = utcnow()
    result = session.execute(
        stmt.returning(stmt.table.c.id),
        [
            {
                "image_id": image_id,
                "model_version_id": model_version_id,
                "score": value,
                "created_at": now,
            }
            for image_id, value in scores.items()
        ],
    )
    return len(result.all())


@dataclass(frozen=True)
class ImageToScore:
    image_id: int
    sha256: str
    prompt: str


def unscored_images(
    session: Session, model_version_id: int, limit: int, after_id: int = 0
) -> list[ImageToScore]:
    """Up to ``limit`` images (with their prompts), with ids above ``after_id``, that have no
    score from this version, in id order."""
    rows = session.execute(
        select(Image.id, Image.sha256, Prompt.text)
        .join(Generation, Image.generation_id == Generation.id)
        .join(Prompt, Generation.prompt_id == Prompt.id)
        .outerjoin(
            Score, and_(Score.image_id == Image.id, Score.model_version_id == model_version_id)
        )
        .where(Score.id.is_(None), Image.id > after_id)
        .order_by(Image.id)
        .limit(limit)
    )
    return [ImageToScore(int(i), str(sha), str(text)) for i, sha, text in rows]


def generation_images(session: Session, generation_id: int) -> list[ImageToScore]:
    """The images of a generation, in order, with its prompt."""
    rows = session.execute(
        select(Image.id, Image.sha256, Prompt.text)
        .join(Generation, Image.generation_id == Generation.id)
        .join(Prompt, Generation.prompt_id == Prompt.id)
        .where(Generation.id == generation_id)
        .order_by(Image.position)
    )
    return [ImageToScore(int(i), str(sha), str(text)) for i, sha, text in rows]


def percentiles(
    session: Session, model_version_id: int, values: Sequence[float]
) -> list[float | None]:
    """For each value, the share (0..100) of the community's scored images scoring lower
    under this model version; None when nothing is scored yet. One round trip; each count
    is a range scan of the (model_version_id, score) index."""
    if not values:
        return []

    def lower_than(value: float | None) -> Any:
        condition = Score.model_version_id == model_version_id
        if value is not None:
            condition = and_(condition, Score.score < value)
        return select(func.count()).select_from(Score).where(condition).scalar_subquery()

    total, *below = session.execute(
        select(lower_than(None), *(lower_than(float(v)) for v in values))
    ).one()
    if not total:
        return [None for _ in values]
    return [100.0 * int(n) / int(total) for n in below]
