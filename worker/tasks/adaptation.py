"""The adapt job: train a LoRA by the paper's recipe (select the generations HPS prefers, fine
tune on them, evaluate on held-out prompts) and register it as a candidate of the job's scope.

Steps: the prompts (given, or the scope's community's, split by prompt), the recipe
(``hps.diffusion.adapt.AdaptConfig`` with the job's overrides), the run, and the
registration, which commits with the job's result (``JobOutcome.complete``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.datasets import split_for_prompt
from db.models import Generation, ModelKind, Prompt
from db.registry import register_model_version
from db.scope import Scope
from jobqueue.contracts import AdaptParams, AdaptReport, JobResult, OutboxKind
from worker.errors import JobCancelled, JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.tasks.scoring import scoring_model

if TYPE_CHECKING:
    from hps.diffusion.adapt import AdaptConfig, AdaptResult


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


def adaptation_prompts(context: JobContext[AdaptParams]) -> tuple[list[str], list[str]]:
    """(training, evaluation) prompts: the job's own, else its community's recent ones with
    the held-out ones for evaluation; JobFailure when there are too few."""
    params, salt = context.params, context.runtime.settings.split_salt
    train_prompts, eval_prompts = list(params.prompts), list(params.eval_prompts)
    if not train_prompts:
        train_prompts, held_out = context.transaction(
            lambda session: community_prompts(session, context.scope, salt, params.limit_prompts)
        )
        eval_prompts = eval_prompts or held_out
    if len(train_prompts) < 2 or not eval_prompts:
        raise JobFailure(
            f"not enough prompts to adapt: {len(train_prompts)} for training, "
            f"{len(eval_prompts)} held out"
        )
    return train_prompts, eval_prompts


def adaptation_config(params: AdaptParams) -> AdaptConfig:
    """The recipe: ``AdaptConfig`` and its ``LoraConfig`` with the job's overrides."""
    from hps.diffusion.adapt import AdaptConfig
    from hps.diffusion.lora_training import LoraConfig

    return AdaptConfig(**params.adapt_overrides(), lora=LoraConfig(**params.lora_overrides()))


def adapt(context: JobContext[AdaptParams]) -> JobOutcome:
    """Adapt the configured Stable Diffusion by the paper's recipe; register a LoRA candidate."""
    from hps.checkpoints import LORA_WEIGHTS_FILE, sha256_of_file

    models_dir = context.runtime.settings.models_dir
    assert models_dir is not None
    train_prompts, eval_prompts = adaptation_prompts(context)
    config = adaptation_config(context.params)
    result = _run(context, config, train_prompts, eval_prompts, models_dir)
    name = f"lora-{str(context.job_id)[:8]}"
    lora_sha256 = sha256_of_file(result.lora_dir / LORA_WEIGHTS_FILE)
    report = AdaptReport(name=name, **result.metadata)

    def register(session: Session) -> JobResult:
        version = register_model_version(
            session,
            kind=ModelKind.lora,
            name=name,
            checkpoint_key=str(result.lora_dir.relative_to(models_dir)),
            architecture=f"sd-lora-r{config.lora.rank}",
            metrics=result.metadata["evaluation"],
            trained_on=result.metadata["selection"],
            checkpoint_sha256=lora_sha256,
            guild_id=context.scope.model_guild(),
        )
        return report.model_copy(update={"model_version_id": version.id})

    return JobOutcome(report, outbox_kind=OutboxKind.adapt_report, complete=register)


def _run(
    context: JobContext[AdaptParams],
    config: AdaptConfig,
    train_prompts: list[str],
    eval_prompts: list[str],
    models_dir: Path,
) -> AdaptResult:
    """Run the adaptation on a fresh pipeline (training changes it); JobCancelled when a
    cancel was asked for."""
    from hps.diffusion.adapt import adapt as run_adaptation
    from worker.pipeline_cache import load_configured_pipeline

    settings = context.runtime.settings
    _model, scorer = scoring_model(context)
    pipe = load_configured_pipeline(settings.sd_pipeline, settings.worker_device)

    def progress(fraction: float, message: str) -> bool:
        try:
            context.progress(fraction, message)
        except JobCancelled:
            return False
        return True

    try:
        return run_adaptation(
            pipe,
            scorer,
            train_prompts,
            eval_prompts,
            models_dir / f"lora-{context.job_id}",
            config,
            base_description=settings.sd_pipeline,
            progress=progress,
        )
    except InterruptedError:
        raise JobCancelled() from None
