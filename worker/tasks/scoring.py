"""Scoring jobs: uploaded images (``/hps score``), a generation's images (``/hps rank``), and
every image not yet scored by the active model."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from db.scope import find_generation
from db.scores import (
    ImageToScore,
    generation_images,
    percentiles,
    store_scores,
    unscored_images,
)
from jobqueue.contracts import (
    ImageScore,
    ModelVersionRef,
    OutboxKind,
    RankedImage,
    RankParams,
    RankResult,
    ScoreParams,
    ScoreResult,
    ScoreUnscoredParams,
    ScoreUnscoredResult,
    ScoringParams,
)
from media.model_inputs import ModelInputSpec, ensure_model_input
from media.store import BlobNotFound
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import model_ref

if TYPE_CHECKING:
    from hps.scoring import HpsScorer


def scoring_model(context: JobContext[Any]) -> tuple[ModelVersionRef, HpsScorer]:
    """(description, scorer) of the model the job asks for (one its scope may use: the
    guild's own or a global one), or the HPS model its guild uses (its own active one, else
    the global one)."""
    params: ScoringParams = context.params
    ref = context.transaction(
        lambda session: model_ref(session, context.scope, version_id=params.model_version_id)
    )
    if ref is None:
        raise JobFailure(
            "no active HPS model yet: an admin registers one with `hps registry add --activate`"
        )
    return ModelVersionRef(id=ref.id, name=ref.name), context.runtime.models.scorer(ref)


def scorer_source(context: JobContext[Any], scorer: HpsScorer, sha256: str) -> bytes:
    """What the scorer reads for a stored image: its stored model input for the scorer's
    geometry and size (derived from the original and stored when missing or damaged: decode
    once), or the original blob where the scorer has no such input. BlobNotFound when the
    image is gone."""
    store = context.runtime.store
    spec = scorer.model_input
    if spec is None:
        return store.get(sha256)
    return ensure_model_input(store, sha256, ModelInputSpec(*spec))


def score_uploaded(context: JobContext[ScoreParams]) -> JobOutcome:
    """Score images a user uploaded (stored by sha256) against their prompt."""
    prompt, shas = context.params.prompt, context.params.images
    if not prompt or not shas:
        raise JobFailure("a score job needs a prompt and at least one image")
    model, scorer = scoring_model(context)
    blobs = [scorer_source(context, scorer, sha) for sha in shas]
    scores = scorer.score(prompt, blobs)
    ranks = context.transaction(
        lambda session: percentiles(session, model.id, scores, context.scope)
    )
    return JobOutcome(
        ScoreResult(
            prompt=prompt,
            model_version=model,
            scores=[
                ImageScore(
                    sha256=sha,
                    score=round(score, 4),
                    percentile=None if rank is None else round(rank, 1),
                )
                for sha, score, rank in zip(shas, scores, ranks, strict=True)
            ],
        ),
        outbox_kind=OutboxKind.score_result,
    )


def rank_generation(context: JobContext[RankParams]) -> JobOutcome:
    """Score (and store) the images of one generation; result ranked best first."""
    generation_id = context.params.generation_id

    def load(session: Session) -> tuple[bool, list[Any]]:
        # Only a generation of the job's own guild (the command checked; this checks again).
        found = find_generation(session, context.scope, generation_id=generation_id)
        return found is not None, generation_images(session, generation_id) if found else []

    exists, images = context.transaction(load)
    if not exists or not images:
        raise JobFailure(f"generation {generation_id} no longer exists (was it deleted?)")
    model, scorer = scoring_model(context)
    sources = [scorer_source(context, scorer, i.sha256) for i in images]
    scores = scorer.score(images[0].prompt, sources)
    context.transaction(
        lambda session: store_scores(
            session, model.id, {i.image_id: s for i, s in zip(images, scores, strict=True)}
        )
    )
    ranking = sorted(
        (
            RankedImage(position=n, image_id=i.image_id, score=round(s, 4))
            for n, (i, s) in enumerate(zip(images, scores, strict=True))
        ),
        key=lambda row: -row.score,
    )
    return JobOutcome(
        RankResult(
            generation_id=generation_id,
            prompt=images[0].prompt,
            model_version=model,
            ranking=ranking,
        ),
        outbox_kind=OutboxKind.rank_result,
    )


def score_all_unscored(context: JobContext[ScoreUnscoredParams]) -> JobOutcome:
    """Score every image without a score from the active model, chunk by chunk."""
    chunk, limit = context.params.chunk_size, context.params.limit
    model, scorer = scoring_model(context)
    done = missing = last_id = 0
    while limit is None or done < limit:
        size = chunk if limit is None else min(chunk, limit - done)
        batch: list[ImageToScore] = context.transaction(
            partial(
                unscored_images,
                model_version_id=model.id,
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
        missing += _score_batch(context, scorer, model.id, batch)
        done += len(batch)
        context.progress(0.0 if limit is None else done / limit, f"scored {done} images")
    return JobOutcome(
        ScoreUnscoredResult(scored=done - missing, missing_blobs=missing, model_version=model),
        outbox_kind=OutboxKind.score_unscored_result,
    )


def _score_batch(
    context: JobContext[Any], scorer: HpsScorer, model_version_id: int, batch: list[ImageToScore]
) -> int:
    """Score and store one batch; return how many of its images are no longer stored."""
    present, blobs = [], []
    for image in batch:
        try:
            blobs.append(scorer_source(context, scorer, image.sha256))
            present.append(image)
        except BlobNotFound:  # deleted since it was listed: nothing to score
            pass
    values = scorer.score([i.prompt for i in present], blobs) if present else []
    new_scores = {i.image_id: s for i, s in zip(present, values, strict=True)}
    context.transaction(partial(store_scores, model_version_id=model_version_id, scores=new_scores))
    return len(batch) - len(present)
