"""The adapt job: train a LoRA by the paper's recipe (select the images HPS prefers, fine tune
on them, evaluate on held-out prompts in three arms) and register it as a candidate of the
job's scope.

Steps: the data (``AdaptParams.source``: the community's harvested image sets, loaded from
the store with scope and consent applied; or prompts to generate for, given or the
community's; ``auto`` takes the harvested sets when there are enough), the recipe
(``hps.diffusion.adapt.AdaptConfig`` with the job's overrides), the run, and the
registration, which commits with the job's result (``JobOutcome.complete``)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.adaptation_data import StoredSet, distinct_prompts, harvested_sets
from db.arena import generator_name
from db.arena_gate import start_gate_run
from db.datasets import split_for_prompt
from db.jobs import get_job
from db.models import GateRunStatus, Generation, ModelKind, Prompt
from db.registry import register_model_version
from db.scope import Scope
from jobqueue.contracts import AdaptParams, AdaptReport, JobResult, OutboxKind, PostedFile
from worker.errors import JobCancelled, JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.tasks.scoring import scoring_model

if TYPE_CHECKING:
    from hps.diffusion.adapt import AdaptConfig, AdaptResult, ImageSet

Source = Literal["generated", "harvested", "both"]
GRID_FILENAME = "adaptation_grid.png"
# Discord's smallest upload limit (a server without boosts, before 2024: 8 MiB; now 10 MiB):
# a bigger grid (a full-size pipeline's) is scaled down until it fits.
MAX_GRID_BYTES = 8 * 1024 * 1024


@dataclass
class AdaptationData:
    """What the adaptation trains and judges on, and why this source."""

    source: Source
    note: str
    eval_prompts: list[str]
    train_prompts: list[str] = field(default_factory=list)
    sets: list[StoredSet] = field(default_factory=list)


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


def held_out_prompts(context: JobContext[AdaptParams]) -> list[str]:
    """The job's evaluation prompts, else its community's held-out (test split) ones."""
    params, salt = context.params, context.runtime.settings.split_salt
    if params.eval_prompts:
        return list(params.eval_prompts)
    _train, held_out = context.transaction(
        lambda session: community_prompts(session, context.scope, salt, params.limit_prompts)
    )
    return list(held_out)


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


def stored_sets(context: JobContext[AdaptParams], min_images: int) -> list[StoredSet]:
    """The scope's harvested sets of ``min_images``+ images (consent applied, held-out
    prompts left out)."""
    params, salt = context.params, context.runtime.settings.split_salt
    return list(
        context.transaction(
            lambda session: harvested_sets(
                session, context.scope, salt, min_images=min_images, limit=params.limit_prompts
            )
        )
    )


def choose_source(
    params: AdaptParams, harvested_prompts: int, min_images: int
) -> tuple[Source, str]:
    """The source the job uses, and a sentence saying why."""
    enough = harvested_prompts >= params.min_harvested_prompts
    found = f"{harvested_prompts} harvested prompts with {min_images}+ images"
    if params.source == "auto":
        if params.prompts:
            return "generated", "generated for the job's prompts"
        if enough:
            return "harvested", f"{found} (auto: at least {params.min_harvested_prompts})"
        return "generated", f"{found}, fewer than {params.min_harvested_prompts}: generated"
    if params.source == "generated":
        return "generated", "generated, as the job asked"
    if harvested_prompts == 0:
        raise JobFailure(f"no harvested image set of {min_images}+ images to adapt from")
    return params.source, f"{params.source} ({found})"


def adaptation_data(context: JobContext[AdaptParams], min_images: int) -> AdaptationData:
    """The source (``AdaptParams.source``), its data and the held-out prompts; JobFailure
    when there is too little."""
    params = context.params
    generating_only = params.source == "generated" or (params.source == "auto" and params.prompts)
    sets = [] if generating_only else stored_sets(context, min_images)
    source, note = choose_source(params, distinct_prompts(sets), min_images)
    if source == "harvested":
        eval_prompts = held_out_prompts(context)
        if not eval_prompts:
            raise JobFailure("no held-out prompts to evaluate the adaptation on")
        return AdaptationData(source, note, eval_prompts, sets=sets)
    train_prompts, eval_prompts = adaptation_prompts(context)
    return AdaptationData(
        source, note, eval_prompts, train_prompts, sets if source == "both" else []
    )


def load_sets(context: JobContext[AdaptParams], sets: list[StoredSet]) -> list[ImageSet]:
    """The sets as ``ImageSet``s read lazily from the store (a set with an image missing from
    the store is left out)."""
    from hps.diffusion.harvested import ImageSet, LazyImages
    from hps.pixels import load_image

    store = context.runtime.store

    def lazy(sha256s: tuple[str, ...]) -> LazyImages:
        return LazyImages(len(sha256s), lambda index: load_image(store.get(sha256s[index])))

    return [
        ImageSet(stored.prompt, lazy(stored.image_sha256s), stored.picked)
        for stored in sets
        if all(store.exists(sha) for sha in stored.image_sha256s)
    ]


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
    config = adaptation_config(context.params)
    data = adaptation_data(context, config.min_images)
    result = _run(context, config, data, models_dir)
    name = f"lora-{str(context.job_id)[:8]}"
    lora_sha256 = sha256_of_file(result.lora_dir / LORA_WEIGHTS_FILE)
    metadata = {**result.metadata, "source": data.source, "source_note": data.note}
    files = posted_grid(context, Path(result.evaluation.grid_png))
    report = AdaptReport(name=name, files=files, **metadata)
    report = report.model_copy(update={"text": report_text(report)})

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
        registered = report.model_copy(update={"model_version_id": version.id})
        text = report_text(registered) + _start_gate(context, session, version.id, data)
        return registered.model_copy(update={"text": text})

    return JobOutcome(report, outbox_kind=OutboxKind.adapt_report, complete=register)


def _start_gate(
    context: JobContext[AdaptParams], session: Session, version_id: int, data: AdaptationData
) -> str:
    """Start the human gate of the new candidate when its guild's gate is on (in the
    transaction that registers it); a sentence for the report ("" when there is no gate)."""
    if context.guild_id is None:
        return ""
    run = start_gate_run(
        session,
        guild_id=context.guild_id,
        candidate_id=version_id,
        channel_id=get_job(session, context.job_id).channel_id,
        generator=generator_name(context.runtime.settings.sd_pipeline),
        fallback_prompts=data.eval_prompts,
    )
    if run is None:
        return ""
    if run.status != GateRunStatus.running:
        return " This server's human gate is on but found no prompts to duel on: not promoted."
    return (
        f" This server's human gate is on: the arena schedules its duels against the active "
        f"configuration in <#{run.channel_id}>, and promotes it only if it wins them."
    )


def _run(
    context: JobContext[AdaptParams],
    config: AdaptConfig,
    data: AdaptationData,
    models_dir: Path,
) -> AdaptResult:
    """Run the adaptation on a fresh pipeline (training changes it); JobCancelled when a
    cancel was asked for."""
    from hps.diffusion.adapt import adapt as run_adaptation
    from worker.pipeline_cache import load_configured_pipeline

    settings = context.runtime.settings
    _model, scorer = scoring_model(context)
    sets = load_sets(context, data.sets)
    if data.source == "harvested" and not sets:
        raise JobFailure("the harvested image sets' files are missing from the image store")
    pipe = load_configured_pipeline(settings.sd_pipeline, settings.worker_device, models_dir)

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
            data.train_prompts,
            data.eval_prompts,
            models_dir / f"lora-{context.job_id}",
            config,
            harvested=sets,
            base_description=settings.sd_pipeline,
            progress=progress,
        )
    except InterruptedError:
        raise JobCancelled() from None


def _interval(low_high: Any) -> str:
    low, high = low_high
    return f"[{float(low):.2f}, {float(high):.2f}]"


def report_text(report: AdaptReport) -> str:
    """What the channel reads: the paper's comparison on held-out prompts (base vs adapted +
    negative prompt: mean HPS with 95% bootstrap intervals, win rate), the negative prompt's
    own share (base + negative prompt), where the examples came from, and how to use the
    LoRA. Only numbers and names the job made: nothing a user typed."""
    extra = report.model_extra or {}
    evaluation: dict[str, Any] = extra.get("evaluation") or {}
    if not evaluation:
        return f"Adapted {report.name} ({report.source_note or report.source})."
    prompts = extra.get("eval_prompts", "?")
    version = (
        f" Candidate version {report.model_version_id}: `/hps admin promote "
        f"{report.model_version_id}` makes generations use it."
        if report.model_version_id is not None
        else ""
    )
    return (
        f"Adapted {report.name} from {report.source_note or report.source}. On {prompts} "
        f"held-out prompts ({evaluation['pairs']} images per arm, the same seeds), mean HPS: "
        f"base {evaluation['base_mean']:.2f} {_interval(evaluation['base_interval'])}, "
        f"adapted {evaluation['adapted_mean']:.2f} {_interval(evaluation['adapted_interval'])} "
        f"(95% intervals); the adapted image wins {evaluation['win_rate']:.0%} of pairs. "
        f"Base with the negative prompt alone: {evaluation['base_negative_mean']:.2f} "
        f"{_interval(evaluation['base_negative_interval'])}, adapted wins "
        f"{evaluation['win_rate_vs_base_negative']:.0%} against it.{version} "
        f"The grid shows base | base + negative prompt | adapted, one held-out prompt per row."
    )


def fit_png(path: Path, limit: int = MAX_GRID_BYTES) -> bytes:
    """The PNG at ``path``, halved in size until it is at most ``limit`` bytes."""
    from PIL import Image

    data = path.read_bytes()
    image = Image.open(io.BytesIO(data)).convert("RGB")
    while len(data) > limit and min(image.size) > 1:
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
    return data


def posted_grid(context: JobContext[AdaptParams], grid: Path) -> list[PostedFile]:
    """The side-by-side grid in the shared store (the bot posts it from there, not from this
    disk), within Discord's upload limit; none when the adaptation wrote no grid."""
    if not grid.is_file():
        return []
    sha256 = context.runtime.store.put(fit_png(grid))
    return [PostedFile(sha256=sha256, filename=GRID_FILENAME)]
