"""The train job: snapshot the choices of the job's scope (a guild's, or the pooled guilds' for
the operators), fine-tune a candidate from the model that scope uses (the guild's active one,
else the global one), evaluate both on the scope's held-out prompts, register the candidate as
the scope's, and promote it there only when it is better by the configured margin (or when
forced).

Steps: :func:`starting_point`, :func:`take_training_snapshot`, :func:`fine_tune`,
:func:`evaluate_both`, :func:`describe` and the registration, which commits with the job's
result (``JobOutcome.complete``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from db.models import ModelKind
from db.registry import promote_model_version, register_model_version
from jobqueue.contracts import JobResult, OutboxKind, PostedFile, TrainParams, TrainReport
from worker.errors import JobCancelled, JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import ModelRef, model_ref
from worker.report import plot_comparison
from worker.snapshot import Snapshot, take_snapshot

if TYPE_CHECKING:
    from hps.training.trainer import TrainResult

MIN_TRAIN_SETS = 8
MIN_TEST_SETS = 4
TRAINING_SHARE = 0.85  # of the progress bar; evaluation takes the rest


@dataclass(frozen=True)
class StartingPoint:
    """What the candidate is fine-tuned from: the scope's active model (its file verified),
    or a checkpoint the job names, or a fetched catalogue base (``base``: its name); and the
    stored model input its architecture trains on (``model_input``, worked out once here: the
    snapshot's images and the trainer's preprocess must agree)."""

    arch: str | None
    path: str | None
    sha256: str | None
    active: ModelRef | None
    base: str | None = None
    model_input: tuple[str, int] | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_input", training_model_input(self.arch))

    @property
    def name(self) -> str:
        """The baseline's name for reports: the model's, the base's, or the file's (never a
        path: it goes into a public report)."""
        if self.active:
            return self.active.name
        return self.base or Path(str(self.path)).name


NO_START = (
    "no active HPS model to start from: give base_checkpoint (a file, or a fetched catalogue "
    "base such as openai-vit-l-14) and arch, register a model, or set TRAIN_BASE"
)


def starting_point(context: JobContext[TrainParams]) -> StartingPoint:
    """The model to start from: the job's ``base_checkpoint``, else the scope's active model,
    else the configured ``TRAIN_BASE`` (a server's first model); JobFailure when none."""
    params = context.params
    active = context.transaction(lambda session: model_ref(session, context.scope))
    arch = params.arch or (active.architecture if active else None)
    if active and not params.base_checkpoint:
        # The active model's file must still be the registered one (sha256) to start from it.
        path = str(context.runtime.models.verified_path(active))
        return StartingPoint(arch, path, active.checkpoint_sha256, active)
    base = params.base_checkpoint or context.runtime.settings.train_base
    if not base:
        raise JobFailure(NO_START)
    return catalogue_base(context, base, params.arch, active) or StartingPoint(
        arch, base, None, active
    )


def catalogue_base(
    context: JobContext[TrainParams], name: str, arch: str | None, active: ModelRef | None
) -> StartingPoint | None:
    """The fetched catalogue entry ``name`` as a starting point (its file verified against the
    sha256 recorded at fetch time; offline); None when ``name`` is not a catalogue name (a
    file path). JobFailure when it was not fetched or its file changed."""
    from hps.catalogue import load_catalogue
    from hps.fetch import FetchRecordError, fetched_checkpoint

    if name not in load_catalogue():
        return None
    models_dir = context.runtime.settings.models_dir
    assert models_dir is not None  # Settings fills it in
    try:
        path, sha256, entry_arch = fetched_checkpoint(models_dir, name)
    except FetchRecordError as exc:
        raise JobFailure(f"cannot start from {name}: {exc}") from None
    return StartingPoint(arch or entry_arch, str(path), sha256, active, base=name)


def training_model_input(arch: str | None) -> tuple[str, int] | None:
    """The stored model input (media.model_inputs) the trainer of ``arch`` reads instead of
    decoding each original: its preprocess mode and resolution; None when the architecture
    is only known from the checkpoint, or shapes images its own way (Hugging Face CLIP)."""
    if arch is None:
        return None
    from hps.architectures import get_architecture

    architecture = get_architecture(arch)
    if architecture.family != "open_clip":
        return None
    return architecture.preprocess, architecture.image_size


def take_training_snapshot(
    context: JobContext[TrainParams],
    cutoff: datetime,
    run_dir: Path,
    model_input: tuple[str, int] | None = None,
) -> Snapshot:
    """The scope's choices up to ``cutoff``, split by prompt (images as the stored model
    inputs ``model_input`` = (preprocess mode, size) names, else the originals: the starting
    point's); JobFailure when too few."""
    rt = context.runtime
    context.progress(0.01, "taking a snapshot of the choices", force=True)
    snapshot = take_snapshot(
        rt.factory,
        rt.store,
        scope=context.scope,
        salt=rt.settings.split_salt,
        cutoff=cutoff,
        cache_dir=run_dir / "image-cache",
        duel_votes=context.params.duel_votes,
        model_input=model_input,
    )
    if len(snapshot.train) < MIN_TRAIN_SETS or len(snapshot.test) < MIN_TEST_SETS:
        raise JobFailure(
            f"not enough choices to train: {len(snapshot.train)} training sets and "
            f"{len(snapshot.test)} held-out sets (need {MIN_TRAIN_SETS} and {MIN_TEST_SETS})"
        )
    return snapshot


def fine_tune(
    context: JobContext[TrainParams], start: StartingPoint, snapshot: Snapshot, run_dir: Path
) -> TrainResult:
    """Train the candidate (``hps.training.trainer.train``); JobCancelled when asked to stop."""
    from hps.training.trainer import TrainConfig, train

    # The snapshot's images may be stored model inputs shaped for the architecture's
    # preprocess mode: the trainer must shape them the same way (not a checkpoint's own).
    config = TrainConfig(
        **context.params.trainer_overrides(),
        device=context.runtime.settings.worker_device,
        preprocess=start.model_input[0] if start.model_input else None,  # type: ignore[arg-type]
    )

    def on_step(step: int, total: int, loss: float) -> bool:
        try:
            context.progress(TRAINING_SHARE * step / total, f"step {step}/{total}, loss {loss:.4f}")
        except JobCancelled:
            return False
        return True

    result = train(
        start.arch,
        start.path,
        snapshot.train,
        run_dir,
        config,
        val_sets=snapshot.validation or None,
        trained_on=snapshot.description,
        progress=False,
        on_step=on_step,
        base_sha256=start.sha256,
    )
    if result.stopped_early:
        raise JobCancelled()
    return result


def evaluate_both(
    context: JobContext[TrainParams], start: StartingPoint, trained: Any, snapshot: Snapshot
) -> tuple[Any, Any]:
    """(candidate, baseline) metrics on the held-out prompts' choices."""
    from hps.evaluation import evaluate
    from hps.scoring import build_scorer

    device = context.runtime.settings.worker_device
    context.progress(TRAINING_SHARE, "evaluating on held-out prompts", force=True)
    candidate = evaluate(
        build_scorer(
            start.arch, trained.checkpoint, device=device, sha256=trained.checkpoint_sha256
        ),
        snapshot.test,
    )
    baseline = evaluate(
        build_scorer(start.arch, start.path, device=device, sha256=start.sha256),
        snapshot.test,
    )
    return candidate, baseline


def train_candidate(context: JobContext[TrainParams]) -> JobOutcome:
    """Run the whole train job; registration and promotion commit with the job's result."""
    settings = context.runtime.settings
    assert settings.models_dir is not None
    cutoff = context.params.cutoff or datetime.now(UTC)
    start = starting_point(context)
    run_dir = settings.models_dir / f"hps-{context.job_id}"
    snapshot = take_training_snapshot(context, cutoff, run_dir, start.model_input)
    trained = fine_tune(context, start, snapshot, run_dir)
    candidate, baseline = evaluate_both(context, start, trained, snapshot)
    name = f"hps-{cutoff:%Y%m%d-%H%M%S}-{str(context.job_id)[:8]}"
    summary = describe(context, name, start, snapshot, trained, (candidate, baseline), run_dir)
    checkpoint_key = str(trained.checkpoint.relative_to(settings.models_dir))

    def register_and_promote(session: Session) -> JobResult:
        version = register_model_version(
            session,
            kind=ModelKind.hps,
            name=name,
            checkpoint_key=checkpoint_key,
            architecture=str(start.arch),
            metrics=summary.metrics,
            trained_on=snapshot.description,
            checkpoint_sha256=trained.checkpoint_sha256,
            guild_id=context.scope.model_guild(),
        )
        if summary.promoted:
            promote_model_version(session, version.id, context.scope)
        return summary.model_copy(update={"model_version_id": version.id})

    return JobOutcome(summary, outbox_kind=OutboxKind.train_report, complete=register_and_promote)


def describe(
    context: JobContext[TrainParams],
    name: str,
    start: StartingPoint,
    snapshot: Snapshot,
    trained: Any,
    evaluation: tuple[Any, Any],
    run_dir: Path,
) -> TrainReport:
    """The promotion decision and the report: metrics, text and plots (kept in the shared
    store: the bot reads them from there, not from this disk)."""
    candidate, baseline = evaluation
    params, rt = context.params, context.runtime
    margin = params.margin if params.margin is not None else rt.settings.promotion_margin
    gain = candidate.top1_accuracy - baseline.top1_accuracy
    promote = params.force or gain >= margin
    plot_name = start.active.name if start.active else "base"
    report_png = plot_comparison(
        candidate, baseline, run_dir / "evaluation.png", baseline_name=plot_name
    )
    metrics = {
        "candidate": asdict(candidate),
        "baseline": asdict(baseline),
        "baseline_name": start.name,
        "top1_gain": gain,
        "margin": margin,
    }
    decision = _decision(promote, params.force, gain, margin)
    plots = [("evaluation.png", report_png), ("training-curve.png", trained.curve_file)]
    return TrainReport(
        candidate_name=name,
        promoted=promote,
        forced=params.force,
        decision=decision,
        metrics=metrics,
        trained_on=snapshot.description,
        scope=context.scope.describe(),
        report_png=str(report_png),
        training_curve_png=str(trained.curve_file) if trained.curve_file else None,
        text=(
            f"Trained {name} on {len(snapshot.train)} choices: top-1 on "
            f"{len(snapshot.test)} held-out prompts' choices "
            f"{candidate.top1_accuracy:.1%} vs {baseline.top1_accuracy:.1%} "
            f"({start.name}). {decision}"
        ),
        files=[
            PostedFile(sha256=rt.store.put(path.read_bytes()), filename=filename)
            for filename, path in plots
            if path is not None and path.exists()
        ],
    )


def _decision(promote: bool, force: bool, gain: float, margin: float) -> str:
    if force:
        return f"promoted by force (top-1 change {gain:+.1%})"
    if promote:
        return f"promoted: top-1 {gain:+.1%} >= margin {margin:.1%}"
    return f"kept as candidate: top-1 {gain:+.1%} < margin {margin:.1%}"
