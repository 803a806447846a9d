"""The arena's ``duel`` job: both sides of a pending duel (``db.arena``), generated with one
seed, each with its side's LoRA (or none: the base generator), stored, attached to the duel and
posted blinded (images ``A.png`` and ``B.png``, no model names) with the vote buttons."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from db.arena import DuelImage, get_duel, set_duel_images
from db.models import ModelKind, Prompt
from jobqueue.contracts import DuelParams, DuelResult, GeneratedImage, OutboxKind
from media.store import key_for
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import ModelRef, model_ref
from worker.tasks.generation import _store


@dataclass(frozen=True)
class DuelPlan:
    """What the job generates: the prompt and each side's LoRA (None: the base generator)."""

    prompt: str
    lora_a: ModelRef | None
    lora_b: ModelRef | None


def _plan(context: JobContext[DuelParams]) -> DuelPlan:
    duel_id = context.params.duel_id

    def load(session: Session) -> DuelPlan:
        # The job's own guild only (the command created it there; this checks again).
        duel = get_duel(session, duel_id, guild_id=context.guild_id)
        prompt = session.get(Prompt, duel.prompt_id)
        if prompt is None:  # pragma: no cover - a foreign key holds it
            raise JobFailure(f"duel {duel_id} has no prompt")

        def lora(version_id: int | None) -> ModelRef | None:
            if version_id is None:
                return None
            return model_ref(session, context.scope, ModelKind.lora, version_id=version_id)

        return DuelPlan(prompt.text, lora(duel.version_a_id), lora(duel.version_b_id))

    plan: DuelPlan = context.transaction(load)
    return plan


def _side(context: JobContext[Any], plan: DuelPlan, lora: ModelRef | None, seed: int) -> Any:
    from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate

    [image] = generate(
        context.runtime.pipelines.pipeline(lora),
        plan.prompt,
        [seed],
        steps=context.params.steps,
        negative_prompt=NEGATIVE_PROMPT if lora else None,
    )
    return image


def generate_duel(context: JobContext[DuelParams]) -> JobOutcome:
    """Generate a duel's two images with the same seed, attach them and post the duel."""
    params = context.params
    plan = _plan(context)
    seed = params.seed if params.seed is not None else random.SystemRandom().randrange(2**31)
    first = _side(context, plan, plan.lora_a, seed)
    context.progress(0.5, "side A done, generating side B", force=True)
    second = _side(context, plan, plan.lora_b, seed)
    image_a, image_b = _store(context, [first, second])
    context.transaction(
        lambda session: set_duel_images(
            session, params.duel_id, _duel_image(image_a), _duel_image(image_b)
        )
    )
    return JobOutcome(
        DuelResult(
            duel_id=params.duel_id, prompt=plan.prompt, seed=seed, image_a=image_a, image_b=image_b
        ),
        outbox_kind=OutboxKind.duel_posted,
    )


def _duel_image(image: GeneratedImage) -> DuelImage:
    return DuelImage(sha256=image.sha256, storage_key=key_for(image.sha256))
