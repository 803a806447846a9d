"""Stored scores: idempotent writes, the images still to score, and percentiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select, true
from sqlalchemy.orm import Session

from db.consent import user_consents
from db.models import Generation, Image, Prompt, Score, utcnow
from db.scope import Scope
from db.upsert import insert_for

# Every score falls in one of SCORE_SAMPLES fixed samples (image_id % SCORE_SAMPLES). A
# community whose sample 0 holds at least SAMPLED_PERCENTILE_MIN consented scores under a
# version (about 40,000 in all) has its percentiles estimated from that sample: a count of
# 1/16 of its index range instead of all of it, with a standard error under one percentile
# point (at most 50/sqrt(2500) = 1.0). Smaller communities are counted exactly.
SCORE_SAMPLES = 16
SAMPLED_PERCENTILE_MIN = 2_500


def store_scores(session: Session, model_version_id: int, scores: dict[int, float]) -> int:
    """Write image scores for a model version; existing (image, version) rows are kept, so a
    redelivered task writes nothing twice. Return the number of new rows."""
    if not scores:
        return 0
    # Each score carries its generation's guild and requester (for scoped percentiles).
    owners = {
        int(image_id): (guild_id, requester_id)
        for image_id, guild_id, requester_id in session.execute(
            select(Image.id, Generation.guild_id, Generation.requester_id)
            .join(Generation, Image.generation_id == Generation.id)
            .where(Image.id.in_(list(scores)))
        )
    }
    stmt = insert_for(session, Score).on_conflict_do_nothing(
        index_elements=["image_id", "model_version_id"]
    )
    now = utcnow()
    rows = [
        {
            "image_id": image_id,
            "model_version_id": model_version_id,
            "score": value,
            "guild_id": owners[image_id][0],
            "requester_id": owners[image_id][1],
            "sample": image_id % SCORE_SAMPLES,
            "created_at": now,
        }
        for image_id, value in scores.items()
        if image_id in owners  # an image deleted meanwhile has nothing to score
    ]
    if not rows:
        return 0
    return len(session.execute(stmt.returning(stmt.table.c.id), rows).all())


@dataclass(frozen=True)
class ImageToScore:
    image_id: int
    sha256: str
    prompt: str


def unscored_images(
    session: Session,
    model_version_id: int,
    limit: int,
    after_id: int = 0,
    scope: Scope | None = None,
) -> list[ImageToScore]:
    """Up to ``limit`` images (with their prompts), with ids above ``after_id``, that have no
    score from this version, in id order; only images of ``scope`` when given."""
    rows = session.execute(
        select(Image.id, Image.sha256, Prompt.text)
        .join(Generation, Image.generation_id == Generation.id)
        .join(Prompt, Generation.prompt_id == Prompt.id)
        .outerjoin(
            Score, and_(Score.image_id == Image.id, Score.model_version_id == model_version_id)
        )
        .where(
            Score.id.is_(None),
            Image.id > after_id,
            scope.owns_generation() if scope is not None else true(),
        )
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
    session: Session, model_version_id: int, values: Sequence[float], scope: Scope
) -> list[float | None]:
    """For each value, the share (0..100) of the images of ``scope`` (a guild: "among this
    community's images") scoring lower under this model version, counting only consented
    generations; None when nothing is scored yet.

    One round trip, one index-only range scan of (version, guild, sample, score, requester):
    of the fixed sample 0 first; only when that sample is small (a community of fewer than
    about 40,000 scores) of the whole range, exactly (PostgreSQL skips that scan otherwise)."""
    if not values:
        return []
    in_scope = (
        Score.model_version_id == model_version_id,
        scope.guild_condition(Score.guild_id),
        user_consents(Score.requester_id),
    )

    def counts(*where: Any) -> Any:
        # One pass over the range, every count a FILTER of it.
        columns = [func.count().label("n")] + [
            func.count().filter(Score.score < float(value)).label(f"below_{i}")
            for i, value in enumerate(values)
        ]
        return select(*columns).select_from(Score).where(*in_scope, *where)

    # A CTE read twice is computed once (PostgreSQL materialises it): one pass over sample 0.
    sampled = counts(Score.sample == 0).cte("sampled")
    sample_is_small = select(sampled.c.n).scalar_subquery() < SAMPLED_PERCENTILE_MIN
    exact = counts(sample_is_small).subquery("exact")
    query = select(sampled, exact).select_from(sampled.join(exact, true()))
    if session.get_bind().dialect.name == "postgresql":
        # A parallel-unsafe function (stable, no side effect) keeps the planner from a
        # parallel plan: for a big community it would launch workers (~8 ms) above the exact
        # scan that the one-time filter then skips.
        query = query.add_columns(func.pg_current_xact_id_if_assigned())
    row = session.execute(query).one()
    width = len(values) + 1
    sample_counts, exact_counts = row[:width], row[width : 2 * width]
    total, *below = sample_counts if sample_counts[0] >= SAMPLED_PERCENTILE_MIN else exact_counts
    if not total:
        return [None for _ in values]
    return [100.0 * int(n) / int(total) for n in below]
