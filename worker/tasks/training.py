"""The train job: snapshot the choices of the job's scope (a guild's, or the pooled guilds' for
the operators), fine-tune a candidate from the model that scope uses (the guild's active one,
else the global one), evaluate both on the scope's held-out prompts, register the candidate as
the scope's, and promote it there only when it is better by the configured margin (or when
forced)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from db.jobs import finish_job
from db.models import ModelKind
from db.registry import get_active_model, promote_model_version, register_model_version
from worker.errors import JobCancelled, JobFailure
from worker.lifecycle import JobContext, JobOutcome
from worker.model_cache import ModelRef
from worker.report import plot_comparison
from worker.snapshot import take_snapshot

MIN_TRAIN_SETS = 8
MIN_TEST_SETS = 4
TRAINING_SHARE = 0.85  # of the progress bar; evaluation takes the rest


def train_candidate(context: JobContext) -> JobOutcome:
    """Run the whole train job; the commit of registration + promotion + job result is one
    transaction, written by this function (the outcome carries the summary only)."""
    from hps.evaluation import evaluate
    from hps.training.trainer import TrainConfig, train

    rt = context.runtime
    params = context.params
    settings = rt.settings
    assert settings.models_dir is not None
    cutoff = datetime.fromisoformat(params["cutoff"]) if params.get("cutoff") else datetime.now(UTC)
    scope = context.scope
    active = context.transaction(lambda session: _active_description(session, scope.guild_id))
    if active is None and not params.get("base_checkpoint"):
        raise JobFailure(
            "no active HPS model to start from: give base_checkpoint and arch, or register one"
        )
    arch = params.get("arch") or (active["architecture"] if active else None)
    base_sha256: str | None = None
    base_path: str | None
    if active and not params.get("base_checkpoint"):
        # The active model's file must still be the registered one (sha256) to start from it.
        base_ref = ModelRef(
            active["id"],
            active["name"],
            active["architecture"],
            active["checkpoint_key"],
            active["checkpoint_sha256"],
        )
        base_path = str(rt.models.verified_path(base_ref))
        base_sha256 = base_ref.checkpoint_sha256
    else:
        base_path = params.get("base_checkpoint")
    run_dir = settings.models_dir / f"hps-{context.job_id}"
    context.progress(0.01, "taking a snapshot of the choices", force=True)
    snapshot = take_snapshot(
        rt.factory,
        rt.store,
        scope=scope,
        salt=settings.split_salt,
        cutoff=cutoff,
        cache_dir=run_dir / "image-cache",
    )
    if len(snapshot.train) < MIN_TRAIN_SETS or len(snapshot.test) < MIN_TEST_SETS:
        raise JobFailure(
            f"not enough choices to train: {len(snapshot.train)} training sets and "
            f"{len(snapshot.test)} held-out sets (need {MIN_TRAIN_SETS} and {MIN_TEST_SETS})"
        )
    config = TrainConfig(
        lr=float(params.get("lr", TrainConfig.lr)),
        batch_size=int(params.get("batch_size", TrainConfig.batch_size)),
        epochs=int(params.get("epochs", 1)),
        steps=int(params["steps"]) if params.get("steps") else None,
        vision_layers=int(params.get("vision_layers", TrainConfig.vision_layers)),
        text_layers=int(params.get("text_layers", TrainConfig.text_layers)),
        seed=int(params.get("seed", 0)),
        device=settings.worker_device,
    )

    def on_step(step: int, total: int, loss: float) -> bool:
        try:
            context.progress(TRAINING_SHARE * step / total, f"step {step}/{total}, loss {loss:.4f}")
        except JobCancelled:
            return False
        return True

    result = train(
        arch,
        base_path,
        snapshot.train,
        run_dir,
        config,
        val_sets=snapshot.validation or None,
        trained_on=snapshot.description,
        progress=False,
        on_step=on_step,
        base_sha256=base_sha256,
    )
    if result.stopped_early:
        raise JobCancelled()

    context.progress(TRAINING_SHARE, "evaluating on held-out prompts", force=True)
    from hps.factory import build_scorer

    candidate_metrics = evaluate(
        build_scorer(
            arch,
            result.checkpoint,
            device=settings.worker_device,
            sha256=result.checkpoint_sha256,
        ),
        snapshot.test,
    )
    baseline_metrics = evaluate(
        build_scorer(arch, base_path, device=settings.worker_device, sha256=base_sha256),
        snapshot.test,
    )
    margin = float(params.get("margin", settings.promotion_margin))
    gain = candidate_metrics.top1_accuracy - baseline_metrics.top1_accuracy
    force = bool(params.get("force", False))
    promote = force or gain >= margin
    report_png = plot_comparison(
        candidate_metrics,
        baseline_metrics,
        run_dir / "evaluation.png",
        baseline_name=active["name"] if active else "base",
    )
    metrics = {
        "candidate": asdict(candidate_metrics),
        "baseline": asdict(baseline_metrics),
        # The file's name, not its path on the worker: this goes into a public report.
        "baseline_name": active["name"] if active else Path(str(base_path)).name,
        "top1_gain": gain,
        "margin": margin,
    }
    checkpoint_key = str(result.checkpoint.relative_to(settings.models_dir))
    name = f"hps-{cutoff:%Y%m%d-%H%M%S}-{str(context.job_id)[:8]}"
    summary: dict[str, Any] = {
        "candidate_name": name,
        "promoted": promote,
        "forced": force,
        "decision": _decision(promote, force, gain, margin),
        "metrics": metrics,
        "trained_on": snapshot.description,
        "scope": scope.describe(),
        "report_png": str(report_png),
        "training_curve_png": str(result.curve_file) if result.curve_file else None,
    }
    # What Discord shows (the bot reads the plots from the shared store, not this disk).
    summary["text"] = (
        f"Trained {name} on {len(snapshot.train)} choices: top-1 on "
        f"{len(snapshot.test)} held-out prompts' choices "
        f"{candidate_metrics.top1_accuracy:.1%} vs {baseline_metrics.top1_accuracy:.1%} "
        f"({metrics['baseline_name']}). {summary['decision']}"
    )
    plots = [("evaluation.png", report_png), ("training-curve.png", result.curve_file)]
    summary["files"] = [
        {"sha256": rt.store.put(path.read_bytes()), "filename": filename}
        for filename, path in plots
        if path is not None and path.exists()
    ]

    def commit(session: Session) -> None:
        version = register_model_version(
            session,
            kind=ModelKind.hps,
            name=name,
            checkpoint_key=checkpoint_key,
            architecture=str(arch),
            metrics=metrics,
            trained_on=snapshot.description,
            checkpoint_sha256=result.checkpoint_sha256,
            guild_id=scope.model_guild(),
        )
        if promote:
            promote_model_version(session, version.id, scope)
        summary["model_version_id"] = version.id
        finish_job(session, context.job_id, summary, outbox_kind="train_report")

    context.transaction(commit)
    return JobOutcome(summary, outbox_kind="train_report")


def _active_description(session: Session, guild_id: int | None) -> dict[str, Any] | None:
    active = get_active_model(session, ModelKind.hps, guild_id)
    if active is None:
        return None
    return {
        "id": active.id,
        "name": active.name,
        "architecture": active.architecture,
        "checkpoint_key": active.checkpoint_key,
        "checkpoint_sha256": active.checkpoint_sha256,
    }


def _decision(promote: bool, force: bool, gain: float, margin: float) -> str:
    if force:
        return f"promoted by force (top-1 change {gain:+.1%})"
    if promote:
        return f"promoted: top-1 {gain:+.1%} >= margin {margin:.1%}"
    return f"kept as candidate: top-1 {gain:+.1%} < margin {margin:.1%}"
