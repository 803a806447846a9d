"""``hps jobs submit | status | list | cancel``: background jobs without Discord."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from cli.resources import open_resources, print_transaction

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from db.models import Job


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps jobs`` to the ``hps`` parser."""
    jobs = subcommands.add_parser("jobs", help="submit and follow background jobs")
    actions = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    _register_submit(actions)
    status = actions.add_parser("status", help="one job, with its result or error")
    status.add_argument("job_id")
    status.set_defaults(handler=cmd_jobs_status)
    listing = actions.add_parser("list", help="recent jobs")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(handler=cmd_jobs_list)
    cancel = actions.add_parser("cancel", help="ask a job to stop")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=cmd_jobs_cancel)


def _register_submit(actions: argparse._SubParsersAction) -> None:
    submit = actions.add_parser("submit", help="queue a job: score, rank, score_unscored, train")
    submit.add_argument("kind")
    submit.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a job parameter (value parsed as JSON when it is JSON)",
    )
    submit.add_argument(
        "--guild",
        type=int,
        help="run it for this guild (its data, its models), as its admins would; "
        "default: the operators' pooled scope",
    )
    submit.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    submit.add_argument("--timeout", type=float, default=3600.0)
    submit.set_defaults(handler=cmd_jobs_submit)


def parse_param_pairs(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict; a value that is JSON is parsed, else kept as text."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def job_view(job: Job) -> dict[str, Any]:
    """A job as printed by the CLI."""
    return {
        "id": str(job.id),
        "kind": job.kind,
        "status": job.status.value,
        "progress": round(job.progress, 3),
        "message": job.progress_message,
        "attempts": job.attempts,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "result": job.result,
        "error": job.error,
    }


def cmd_jobs_submit(args: argparse.Namespace) -> int:
    """Queue a job; with ``--wait``, follow it to its end and print it."""
    with open_resources() as resources:
        job_id = queue_job(resources.factory, args.kind, parse_param_pairs(args.param), args.guild)
        if not args.wait:
            print(json.dumps({"id": str(job_id), "status": "queued"}))
            return 0
        return wait_for(resources.factory, job_id, args.timeout)


def queue_job(
    factory: sessionmaker[Session], kind: str, params: dict[str, Any], guild_id: int | None
) -> uuid.UUID:
    """Check ``params`` against the ``kind`` job's contract, then record and enqueue the job for
    ``guild_id`` (None: the operators' pooled scope)."""
    from config import get_settings
    from jobqueue.app import make_celery
    from jobqueue.contracts import parse_params
    from jobqueue.submit import JobOrigin, submit_job

    typed = parse_params(kind, params)  # a bad kind or parameter: one line, nothing queued
    return submit_job(make_celery(get_settings()), factory, typed, JobOrigin(guild_id=guild_id))


def wait_for(factory: sessionmaker[Session], job_id: uuid.UUID, timeout: float) -> int:
    """Poll the job until it ends, print it; 0 when it succeeded, 1 otherwise."""
    from db.engine import run_transaction
    from db.jobs import get_job
    from db.models import TERMINAL_JOB_STATUSES, JobStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = run_transaction(factory, lambda s: job_view(get_job(s, job_id)))
        if JobStatus(job["status"]) in TERMINAL_JOB_STATUSES:
            print(json.dumps(job, indent=2))
            return 0 if job["status"] == "succeeded" else 1
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still not finished after {timeout:.0f} s")


def cmd_jobs_status(args: argparse.Namespace) -> int:
    """Print one job."""
    from db.jobs import get_job

    return print_transaction(lambda s: job_view(get_job(s, uuid.UUID(args.job_id))))


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    """Ask a job to stop; print it."""
    from db.jobs import request_cancel

    return print_transaction(lambda s: job_view(request_cancel(s, uuid.UUID(args.job_id))))


def cmd_jobs_list(args: argparse.Namespace) -> int:
    """Print the most recent jobs (optionally of one status)."""
    from sqlalchemy import select

    from db.models import Job, JobStatus

    query = select(Job).order_by(Job.created_at.desc()).limit(args.limit)
    if args.status:
        query = query.where(Job.status == JobStatus(args.status))
    return print_transaction(lambda s: [job_view(j) for j in s.scalars(query)])
