"""Generation jobs: ``/hps generate`` (n images, seeds kept, with the active LoRA),
``/hps regenerate`` (best-of-n by HPS beside the original, both scored), and ``adapt`` (train a
LoRA by the paper's recipe and register it as a candidate)."""

from __future__ import annotations

import random
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.datasets import split_for_prompt
from db.models import Generation, ModelKind, Prompt
from db.registry import get_active_model, register_model_version
from db.scope import Scope, find_generation
from db.scores import generation_images
from media.intake import encode_canonical
from worker.errors import JobCancelled, JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import ModelRef
from worker.tasks.scoring import scoring_model

MAX_IMAGES = 10  # Discord: at most 10 attachments per message
DEFAULT_STEPS = 25


def active_lora(context: JobContext) -> ModelRef | None:
    """The LoRA the job's guild uses (its own active one, else the global one), if any."""
    guild_id = context.scope.guild_id

    def load(session: Session) -> ModelRef | None:
        version = get_active_model(session, ModelKind.lora, guild_id)
        if version is None:
            return None
        return ModelRef.of(version)

    return context.transaction(load)


def _store(context: JobContext, generated: list[Any]) -> list[dict[str, Any]]:
    stored = []
    for item in generated:
        canonical = encode_canonical(item.image)
        context.runtime.store.put(canonical.data, canonical.sha256)
        stored.append(
            {
                "sha256": canonical.sha256,
                "seed": item.seed,
                "width": canonical.width,
                "height": canonical.height,
                "phash": canonical.phash,
            }
        )
    return stored


def _seeds(params: dict[str, Any], count: int) -> list[int]:
    if params.get("seeds"):
        return [int(s) for s in params["seeds"]][:count]
    rng = random.SystemRandom()
    return [rng.randrange(2**31) for _ in range(count)]


def generate_images(context: JobContext) -> JobOutcome:
    """Generate n images for a prompt with the adapted model (if any); seeds recorded."""
    from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate

    prompt = str(context.params.get("prompt") or "").strip()
    count = int(context.params.get("n", 4))
    if not prompt:
        raise JobFailure("a generate job needs a prompt")
    if not 1 <= count <= MAX_IMAGES:
        raise JobFailure(f"n must be between 1 and {MAX_IMAGES}")
    lora = active_lora(context)
    pipe = context.runtime.pipelines.pipeline(lora)
    negative = NEGATIVE_PROMPT if lora else None
    generated = generate(
        pipe,
        prompt,
        _seeds(context.params, count),
        steps=int(context.params.get("steps", DEFAULT_STEPS)),
        negative_prompt=negative,
        on_progress=lambda fraction: context.progress(fraction, f"{count} images, denoising"),
    )
    return JobOutcome(
        {
            "prompt": prompt,
            "images": _store(context, generated),
            "lora_version": {"id": lora.id, "name": lora.name} if lora else None,
            "negative_prompt": negative,
            "steps": int(context.params.get("steps", DEFAULT_STEPS)),
        },
        outbox_kind="generate_result",
    )


def regenerate(context: JobContext) -> JobOutcome:
    """Regenerate a generation's prompt with the adapted model, best of n by HPS, and score
    the original images beside it."""
    from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate

    count = int(context.params.get("n", 4))
    if not 1 <= count <= 16:
        raise JobFailure("n must be between 1 and 16")
    original: list[Any] = []
    prompt = str(context.params.get("prompt") or "").strip()
    if context.params.get("generation_id") is not None:
        generation_id = int(context.params["generation_id"])

        def load(session: Session) -> list[Any]:
            # Only a generation of the job's own guild (the command checked; this checks again).
            if find_generation(session, context.scope, generation_id=generation_id) is None:
                return []
            return generation_images(session, generation_id)

        original = context.transaction(load)
        if not original:
            raise JobFailure(f"generation {generation_id} no longer exists (was it deleted?)")
        prompt = original[0].prompt
    if not prompt:
        raise JobFailure("a regenerate job needs a generation id or a prompt")
    model, scorer = scoring_model(context)
    original_scores = (
        scorer.score(prompt, [context.runtime.store.get(i.sha256) for i in original])
        if original
        else []
    )
    lora = active_lora(context)
    pipe = context.runtime.pipelines.pipeline(lora)
    candidates = generate(
        pipe,
        prompt,
        _seeds(context.params, count),
        steps=int(context.params.get("steps", DEFAULT_STEPS)),
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
        {
            "prompt": prompt,
            "model_version": model,
            "lora_version": {"id": lora.id, "name": lora.name} if lora else None,
            "original": {
                "image_ids": [i.image_id for i in original],
                "scores": [round(s, 4) for s in original_scores],
                "best_score": round(max(original_scores), 4) if original_scores else None,
            },
            "regenerated": {
                **stored,
                "score": round(scores[best], 4),
                "candidates": len(candidates),
                "all_scores": [round(s, 4) for s in scores],
            },
        },
        outbox_kind="regenerate_result",
    )


def community_prompts(
    session: Session, scope: Scope, salt: str, limit: int
) -> tuple[list[str], list[str]]:
    """Recent prompts of the scope's community (consent applied), split by prompt:
    (training, held-out test)."""
    rows = session.execute(
        select(Prompt.text, Prompt.normalized_hash)
        .where(Prompt.id.in_(select(Generation.prompt_id).where(scope.generations())))
        .order_by(Prompt.id.desc())
        .limit(limit)
    ).all()
    train: list[str] = []
    test: list[str] = []
    for text, digest in rows:
        (test if split_for_prompt(digest, salt) == "test" else train).append(text)
    return train, test


def adapt(context: JobContext) -> JobOutcome:
    """Adapt the configured Stable Diffusion by the paper's recipe; register a LoRA candidate."""
    from hps.diffusion.adapt import AdaptConfig
    from hps.diffusion.adapt import adapt as run_adaptation
    from hps.diffusion.lora_training import LoraConfig
    from worker.pipeline_cache import load_configured_pipeline

    params, settings = context.params, context.runtime.settings
    assert settings.models_dir is not None
    train_prompts = list(params.get("prompts") or [])
    eval_prompts = list(params.get("eval_prompts") or [])
    if not train_prompts:
        train_prompts, held_out = context.transaction(
            lambda session: community_prompts(
                session, context.scope, settings.split_salt, int(params.get("limit_prompts", 500))
            )
        )
        eval_prompts = eval_prompts or held_out
    if len(train_prompts) < 2 or not eval_prompts:
        raise JobFailure(
            f"not enough prompts to adapt: {len(train_prompts)} for training, "
            f"{len(eval_prompts)} held out"
        )
    _model, scorer = scoring_model(context)
    pipe = load_configured_pipeline(
        settings.sd_pipeline, settings.worker_device
    )  # a fresh copy: training changes it
    config = AdaptConfig(
        images_per_prompt=int(params.get("images_per_prompt", 8)),
        alpha=float(params.get("alpha", 2.0)),
        blur_threshold=float(params.get("blur_threshold", 0.0)),
        inference_steps=int(params.get("inference_steps", DEFAULT_STEPS)),
        eval_images_per_prompt=int(params.get("eval_images_per_prompt", 2)),
        seed=int(params.get("seed", 0)),
        lora=LoraConfig(
            rank=int(params.get("rank", 4)),
            lr=float(params.get("lr", 1e-5)),
            steps=int(params.get("lora_steps", 1000)),
            batch_size=int(params.get("batch_size", 4)),
            seed=int(params.get("seed", 0)),
        ),
    )
    models_dir = settings.models_dir
    out_dir = models_dir / f"lora-{context.job_id}"

    def progress(fraction: float, message: str) -> bool:
        try:
            context.progress(fraction, message)
        except JobCancelled:
            return False
        return True

    try:
        result = run_adaptation(
            pipe,
            scorer,
            train_prompts,
            eval_prompts,
            out_dir,
            config,
            base_description=settings.sd_pipeline,
            progress=progress,
        )
    except InterruptedError:
        raise JobCancelled() from None
    name = f"lora-{str(context.job_id)[:8]}"
    evaluation = result.metadata["evaluation"]
    from hps.checkpoints import LORA_WEIGHTS_FILE, sha256_of_file

    lora_sha256 = sha256_of_file(result.lora_dir / LORA_WEIGHTS_FILE)

    def register(session: Session) -> int:
        version = register_model_version(
            session,
            kind=ModelKind.lora,
            name=name,
            checkpoint_key=str(result.lora_dir.relative_to(models_dir)),
            architecture=f"sd-lora-r{config.lora.rank}",
            metrics=evaluation,
            trained_on=result.metadata["selection"],
            checkpoint_sha256=lora_sha256,
            guild_id=context.scope.model_guild(),
        )
        return version.id

    version_id = context.transaction(register)
    return JobOutcome(
        {"model_version_id": version_id, "name": name, "status": "candidate", **result.metadata},
        outbox_kind="adapt_report",
    )
