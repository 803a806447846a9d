"""The life of one job inside a task: start, progress, cancel, finish or fail, exactly once.

A task calls :func:`run_job` with the job id and a body. The job's stored parameters are
validated first with its kind's contract (``jobqueue.contracts``): a payload that does not fit
fails the job with a message naming the kind and the field, and the body gets them typed
(``JobContext.params``). Redelivery is safe: a job that has already finished is skipped,
results are written with the outbox row (and the writes that must go with them, such as a
trained model's registration) in one transaction that refuses a second finish, and stored
scores are upserts. Expected failures (a deleted image, a missing or corrupt model file, bad
input) end the job with a short reason the user is told; transient database errors propagate
so Celery retries the task; anything else fails the job and the worker goes on serving. The
user never sees paths, URLs or exception text: those stay in the job row (``hps jobs
status``) and the log.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from db.engine import run_transaction
from db.errors import DomainError, JobStateError
from db.jobs import (
    fail_job,
    finish_job,
    lock_unfinished_job,
    mark_cancelled,
    start_job,
    update_job_progress,
)
from db.outbox import OutboxKind
from db.scope import Scope
from jobqueue.contracts import InvalidJobParams, JobParams, JobResult, Post, parse_params
from worker.errors import JobCancelled, JobFailure
from worker.runtime import Runtime, runtime

log = logging.getLogger(__name__)
PROGRESS_INTERVAL_S = 2.0


@dataclass
class JobOutcome:
    """What a job's body hands back: its result, the outbox row that posts it (the result
    itself unless ``outbox_payload`` says otherwise), and writes that must commit together
    with the job's finish (``complete``: e.g. registering a trained model; it returns the
    final result)."""

    result: JobResult
    outbox_kind: OutboxKind | None = None
    outbox_payload: Post | None = None
    complete: Callable[[Session], JobResult] | None = None


P = TypeVar("P", bound=JobParams)


@dataclass
class JobContext(Generic[P]):
    """A running job as its body sees it: its typed parameters, scope and runtime."""

    job_id: uuid.UUID
    kind: str
    params: P
    requested_by: int | None
    runtime: Runtime
    guild_id: int | None = None
    _last_progress: float = field(default=0.0)

    @property
    def scope(self) -> Scope:
        """Whose data and models the job works with: its guild's, or the operators' pooled
        scope (a job queued by an operator command or the CLI)."""
        return Scope.of_job(self.guild_id, pooled=self.params.pooled)

    def progress(self, fraction: float, message: str, *, force: bool = False) -> None:
        """Record progress (throttled); raise JobCancelled if a cancel was requested."""
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_INTERVAL_S:
            return
        self._last_progress = now
        keep_going = run_transaction(
            self.runtime.factory,
            lambda session: update_job_progress(session, self.job_id, fraction, message),
        )
        if not keep_going:
            raise JobCancelled()

    def transaction(self, work: Callable[[Session], Any]) -> Any:
        """Run ``work`` in one retried transaction."""
        return run_transaction(self.runtime.factory, work)


INTERNAL_ERROR = "an internal error stopped it; the admins can see the details"
MODEL_FILES_ERROR = "the model's files are missing or damaged; the admins can see which"


def expected_errors() -> tuple[type[BaseException], ...]:
    """Exception types of expected failures (each has a short reason for the user)."""
    from media.intake import ImageRejected
    from media.store import BlobIntegrityError, BlobNotFound
    from worker.model_cache import ModelFileMissing

    types: list[type[BaseException]] = [
        JobFailure,
        DomainError,
        ImageRejected,
        BlobIntegrityError,
        ModelFileMissing,
    ]
    try:  # torch-side errors, only importable where the ml extra is installed
        from hps.checkpoints import CheckpointError
        from hps.preprocess import ImageLoadError
        from hps.training.manifests import ManifestError

        types += [CheckpointError, ImageLoadError, ManifestError]
    except ImportError:  # pragma: no cover
        pass
    return (*types, BlobNotFound)


def user_reason(exc: BaseException) -> str:
    """The short reason a user is told for a failed job: the message of refusals written for
    users (bad input, a domain rule), a fixed sentence for everything else."""
    from media.intake import ImageRejected
    from media.store import BlobIntegrityError, BlobNotFound
    from worker.model_cache import ModelFileMissing

    if isinstance(exc, JobFailure | DomainError | ImageRejected):
        return str(exc) or type(exc).__name__
    if isinstance(exc, BlobNotFound):
        return "an image it needs is no longer stored (was it deleted?)"
    if isinstance(exc, BlobIntegrityError):
        return "a stored image it needs is damaged; the admins can see which"
    if isinstance(exc, ModelFileMissing):
        return MODEL_FILES_ERROR
    try:
        from hps.checkpoints import CheckpointError
        from hps.preprocess import ImageLoadError
    except ImportError:  # pragma: no cover
        return INTERNAL_ERROR
    if isinstance(exc, CheckpointError):
        return MODEL_FILES_ERROR
    if isinstance(exc, ImageLoadError):
        return "an image could not be read"
    return INTERNAL_ERROR


def describe_failure(exc: BaseException) -> str:
    """The whole story of a failed job, for the job row and the log (admins only)."""
    from media.store import BlobNotFound

    if isinstance(exc, BlobNotFound):
        return f"image {exc.args[0]} is no longer stored (was it deleted?)"
    return str(exc) or type(exc).__name__


def run_job(job_id: str, body: Callable[[JobContext[Any]], JobOutcome]) -> str:
    """Run one job's body with its whole life cycle; return the final status."""
    rt = runtime()
    identifier = uuid.UUID(job_id)
    try:
        job = run_transaction(rt.factory, lambda session: _start(session, identifier))
    except JobStateError as exc:
        log.info("job %s skipped: %s", job_id, exc)
        return "skipped"
    try:
        params = parse_params(job["kind"], job["params"])
    except InvalidJobParams as exc:
        log.info("job %s failed: %s", job_id, exc)
        _fail(rt, identifier, str(exc), str(exc))
        return "failed"
    context: JobContext[JobParams] = JobContext(
        identifier, job["kind"], params, job["requested_by"], rt, guild_id=job["guild_id"]
    )
    try:
        outcome = body(context)
    except JobCancelled:
        run_transaction(rt.factory, lambda session: mark_cancelled(session, identifier))
        return "cancelled"
    except SoftTimeLimitExceeded:
        reason = "it took longer than its time limit and was stopped"
        _fail(rt, identifier, reason, reason)
        return "failed"
    except DBAPIError:
        raise  # transient database trouble: Celery retries the task
    except expected_errors() as exc:
        log.info("job %s failed: %s", job_id, describe_failure(exc))
        _fail(rt, identifier, describe_failure(exc), user_reason(exc))
        return "failed"
    except Exception as exc:
        log.exception("job %s crashed", job_id)
        _fail(rt, identifier, f"internal error ({type(exc).__name__}): {exc}", INTERNAL_ERROR)
        return "failed"
    finish(rt, identifier, outcome)
    return "succeeded"


def finish(rt: Runtime, job_id: uuid.UUID, outcome: JobOutcome) -> JobResult:
    """Store the outcome and queue its outbox row in one transaction, with the writes the
    outcome must commit with; return the final result. A job already finished is left as it
    is (its completing writes roll back with the rest)."""

    def write(session: Session) -> JobResult:
        if lock_unfinished_job(session, job_id) is None:
            return outcome.result
        result = outcome.complete(session) if outcome.complete else outcome.result
        payload = outcome.outbox_payload.stored() if outcome.outbox_payload else None
        finish_job(
            session,
            job_id,
            result.stored(),
            outbox_kind=outcome.outbox_kind,
            outbox_payload=payload,
        )
        return result

    result: JobResult = run_transaction(rt.factory, write)
    return result


def _start(session: Session, job_id: uuid.UUID) -> dict[str, Any]:
    job = start_job(session, job_id)
    return {
        "kind": job.kind,
        "params": dict(job.params),
        "requested_by": job.requested_by,
        "guild_id": job.guild_id,
    }


def _fail(rt: Runtime, job_id: uuid.UUID, detail: str, user_message: str) -> None:
    run_transaction(
        rt.factory,
        lambda session: fail_job(session, job_id, detail, user_message=user_message),
    )
