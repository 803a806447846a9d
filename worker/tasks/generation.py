"""Generation jobs: ``/hps generate`` (n images, seeds kept, with the active LoRA) and
``/hps regenerate`` (best-of-n by HPS beside the original, both scored)."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy.orm import Session

from db.models import ModelKind
from db.scope import find_generation
from db.scores import generation_images
from jobqueue.contracts import (
    MAX_GENERATED_IMAGES,
    MAX_REGENERATE_CANDIDATES,
    GeneratedImage,
    GenerateParams,
    GenerateResult,
    ModelVersionRef,
    OriginalImages,
    OutboxKind,
    RegeneratedImage,
    RegenerateParams,
    RegenerateResult,
)
from media.intake import encode_canonical
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import ModelRef, model_ref
from worker.tasks.scoring import scoring_model


def active_lora(context: JobContext[Any]) -> ModelRef | None:
    """The LoRA the job's guild uses (its own active one, else the global one), if any."""
    return context.transaction(lambda session: model_ref(session, context.scope, ModelKind.lora))


def _described(lora: ModelRef | None) -> ModelVersionRef | None:
    return ModelVersionRef(id=lora.id, name=lora.name) if lora else None


def _store(context: JobContext[Any], generated: list[Any]) -> list[GeneratedImage]:
    stored = []
    for item in generated:
        canonical = encode_canonical(item.image)
        context.runtime.store.put(canonical.data, canonical.sha256)
        stored.append(
            GeneratedImage(
                sha256=canonical.sha256,
                seed=item.seed,
                width=canonical.width,
                height=canonical.height,
                phash=canonical.phash,
            )
        )
    return stored


def _seeds(seeds: list[int] | None, count: int) -> list[int]:
    if seeds:
        return seeds[:count]
    rng = random.SystemRandom()
    return [rng.randrange(2**31) for _ in range(count)]


def generate_images(context: JobContext[GenerateParams]) -> JobOutcome:
    """Generate n images for a prompt with the adapted model (if any); seeds recorded."""
    from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate

    params = context.params
    prompt, count = params.prompt, params.n
    if not prompt:
        raise JobFailure("a generate job needs a prompt")
    if not 1 <= count <= MAX_GENERATED_IMAGES:
        raise JobFailure(f"n must be between 1 and {MAX_GENERATED_IMAGES}")
    lora = active_lora(context)
    pipe = context.runtime.pipelines.pipeline(lora)
    negative = NEGATIVE_PROMPT if lora else None
    generated = generate(
        pipe,
        prompt,
        _seeds(params.seeds, count),
        steps=params.steps,
        negative_prompt=negative,
        on_progress=lambda fraction: context.progress(fraction, f"{count} images, denoising"),
    )
    return JobOutcome(
        GenerateResult(
            prompt=prompt,
            images=_store(context, generated),
            lora_version=_described(lora),
            negative_prompt=negative,
            steps=params.steps,
        ),
        outbox_kind=OutboxKind.generate_result,
    )


def _original_images(context: JobContext[RegenerateParams]) -> tuple[str, list[Any]]:
    """(prompt, images) of the generation the job redoes; its own prompt when it names none."""
    generation_id = context.params.generation_id
    if generation_id is None:
        return context.params.prompt, []

    def load(session: Session) -> list[Any]:
        # Only a generation of the job's own guild (the command checked; this checks again).
        if find_generation(session, context.scope, generation_id=generation_id) is None:
            return []
        return generation_images(session, generation_id)

    original = context.transaction(load)
    if not original:
        raise JobFailure(f"generation {generation_id} no longer exists (was it deleted?)")
    return original[0].prompt, original


def regenerate(context: JobContext[RegenerateParams]) -> JobOutcome:
    """Regenerate a generation's prompt with the adapted model, best of n by HPS, and score
    the original images beside it."""
    from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate

    count = context.params.n
    if not 1 <= count <= MAX_REGENERATE_CANDIDATES:
        raise JobFailure(f"n must be between 1 and {MAX_REGENERATE_CANDIDATES}")
    prompt, original = _original_images(context)
    if not prompt:
        raise JobFailure("a regenerate job needs a generation id or a prompt")
    model, scorer = scoring_model(context)
    original_scores = (
        scorer.score(prompt, [context.runtime.store.get(i.sha256) for i in original])
        if original
        else []
    )
    lora = active_lora(context)
    candidates = generate(
        context.runtime.pipelines.pipeline(lora),
        prompt,
        _seeds(context.params.seeds, count),
        steps=context.params.steps,
        negative_prompt=NEGATIVE_PROMPT if lora else None,
        on_progress=lambda fraction: context.progress(
            0.95 * fraction, f"{count} candidates, denoising"
        ),
    )
    context.progress(0.95, "scoring the candidates", force=True)
    scores = scorer.score(prompt, [c.image for c in candidates])
    best = max(range(len(candidates)), key=scores.__getitem__)
    [stored] = _store(context, [candidates[best]])
    return JobOutcome(
        RegenerateResult(
            prompt=prompt,
            model_version=model,
            lora_version=_described(lora),
            original=OriginalImages(
                image_ids=[i.image_id for i in original],
                scores=[round(s, 4) for s in original_scores],
                best_score=round(max(original_scores), 4) if original_scores else None,
            ),
            regenerated=RegeneratedImage(
                **stored.model_dump(),
                score=round(scores[best], 4),
                candidates=len(candidates),
                all_scores=[round(s, 4) for s in scores],
            ),
        ),
        outbox_kind=OutboxKind.regenerate_result,
    )
