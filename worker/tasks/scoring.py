"""Scoring jobs: uploaded images (``/hps score``), a generation's images (``/hps rank``), and
every image not yet scored by the active model."""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy.orm import Session

from db.models import ModelKind
from db.registry import get_active_model, get_usable_model_version
from db.scope import find_generation
from db.scores import (
    ImageToScore,
    generation_images,
    percentiles,
    store_scores,
    unscored_images,
)
from media.store import BlobNotFound
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import ModelRef

DEFAULT_CHUNK = 256


def scoring_model(context: JobContext) -> tuple[dict[str, Any], Any]:
    """(description, scorer) of the model the job asks for (one its scope may use: the
    guild's own or a global one), or the HPS model its guild uses (its own active one, else
    the global one)."""
    requested = context.params.get("model_version_id")
    scope = context.scope

    def load(session: Session) -> ModelRef | None:
        version = (
            get_usable_model_version(session, scope, int(requested))
            if requested is not None
            else get_active_model(session, ModelKind.hps, scope.guild_id)
        )
        if version is None:
            return None
        return ModelRef.of(version)

    ref = context.transaction(load)
    if ref is None:
        raise JobFailure(
            "no active HPS model yet: an admin registers one with `hps registry add --activate`"
        )
    return {"id": ref.id, "name": ref.name}, context.runtime.models.scorer(ref)


def score_uploaded(context: JobContext) -> JobOutcome:
    """Score images a user uploaded (stored by sha256) against their prompt."""
    prompt = str(context.params.get("prompt") or "").strip()
    shas = [str(s) for s in context.params.get("images", [])]
    if not prompt or not shas:
        raise JobFailure("a score job needs a prompt and at least one image")
    model, scorer = scoring_model(context)
    blobs = [context.runtime.store.get(sha) for sha in shas]
    scores = scorer.score(prompt, blobs)
    ranks = context.transaction(
        lambda session: percentiles(session, model["id"], scores, context.scope)
    )
    return JobOutcome(
        {
            "prompt": prompt,
            "model_version": model,
            "scores": [
                {
                    "sha256": sha,
                    "score": round(score, 4),
                    "percentile": None if rank is None else round(rank, 1),
                }
                for sha, score, rank in zip(shas, scores, ranks, strict=True)
            ],
        },
        outbox_kind="score_result",
    )


def rank_generation(context: JobContext) -> JobOutcome:
    """Score (and store) the images of one generation; result ranked best first."""
    generation_id = int(context.params["generation_id"])

    def load(session: Session) -> tuple[bool, list[Any]]:
        # Only a generation of the job's own guild (the command checked; this checks again).
        found = find_generation(session, context.scope, generation_id=generation_id)
        return found is not None, generation_images(session, generation_id) if found else []

    exists, images = context.transaction(load)
    if not exists or not images:
        raise JobFailure(f"generation {generation_id} no longer exists (was it deleted?)")
    model, scorer = scoring_model(context)
    scores = scorer.score(images[0].prompt, [context.runtime.store.get(i.sha256) for i in images])
    context.transaction(
        lambda session: store_scores(
            session, model["id"], {i.image_id: s for i, s in zip(images, scores, strict=True)}
        )
    )
    ranking = sorted(
        (
            {"position": n, "image_id": i.image_id, "score": round(s, 4)}
            for n, (i, s) in enumerate(zip(images, scores, strict=True))
        ),
        key=lambda row: -float(row["score"]),
    )
    return JobOutcome(
        {
            "generation_id": generation_id,
            "prompt": images[0].prompt,
            "model_version": model,
            "ranking": ranking,
        },
        outbox_kind="rank_result",
    )


def score_all_unscored(context: JobContext) -> JobOutcome:
    """Score every image without a score from the active model, chunk by chunk."""
    chunk = int(context.params.get("chunk_size", DEFAULT_CHUNK))
    limit = context.params.get("limit")
    model, scorer = scoring_model(context)
    done = missing = last_id = 0
    while limit is None or done < int(limit):
        size = chunk if limit is None else min(chunk, int(limit) - done)
        batch: list[ImageToScore] = context.transaction(
            partial(
                unscored_images,
                model_version_id=model["id"],
                limit=size,
                after_id=last_id,
                # The operators' job scores every image with its (global) model: scores expose
                # nothing, and a guild without its own model reads its percentiles from them.
                scope=None if context.scope.is_pooled else context.scope,
            )
        )
        if not batch:
            break
        last_id = batch[-1].image_id
        present, blobs = [], []
        for image in batch:
            try:
                blobs.append(context.runtime.store.get(image.sha256))
                present.append(image)
            except BlobNotFound:  # deleted since it was listed: nothing to score
                missing += 1
        values = scorer.score([i.prompt for i in present], blobs) if present else []
        new_scores = {i.image_id: s for i, s in zip(present, values, strict=True)}
        context.transaction(partial(store_scores, model_version_id=model["id"], scores=new_scores))
        done += len(batch)
        context.progress(0.0 if limit is None else done / int(limit), f"scored {done} images")
    return JobOutcome(
        {"scored": done - missing, "missing_blobs": missing, "model_version": model},
        outbox_kind="score_unscored_result",
    )
