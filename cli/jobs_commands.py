"""``hps jobs ...``, ``hps worker`` and ``hps registry ...``: operating the queue and the
model registry without Discord."""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from config import get_settings


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add the queue and registry subcommands to the ``hps`` parser."""
    jobs = subcommands.add_parser("jobs", help="submit and follow background jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    submit = jobs_sub.add_parser("submit", help="queue a job: score, rank, score_unscored, train")
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
    status = jobs_sub.add_parser("status", help="one job, with its result or error")
    status.add_argument("job_id")
    listing = jobs_sub.add_parser("list", help="recent jobs")
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=20)
    cancel = jobs_sub.add_parser("cancel", help="ask a job to stop")
    cancel.add_argument("job_id")
    jobs.set_defaults(handler=cmd_jobs)

    worker = subcommands.add_parser("worker", help="start a Celery worker")
    worker.add_argument("--queues", default="gpu,default")
    worker.add_argument("--gpu", help="pin to this GPU index (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--pool", choices=["solo", "prefork"], default="prefork")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--hostname", help="Celery node name (default: hps-<queues>@<host>)")
    worker.set_defaults(handler=cmd_worker)

    registry = subcommands.add_parser("registry", help="model versions (hps | lora)")
    registry_sub = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)
    add = registry_sub.add_parser("add", help="register a checkpoint as a model version")
    add.add_argument("--kind", choices=["hps", "lora"], default="hps")
    add.add_argument("--name", required=True)
    add.add_argument("--arch", required=True)
    add.add_argument(
        "--checkpoint",
        required=True,
        help="path (inside MODELS_DIR or absolute): a file for hps, a folder for lora",
    )
    add.add_argument(
        "--sha256",
        help="expected sha256 of the checkpoint (default: its .sha256 sidecar, if any); "
        "the file's own sha256 is registered and verified on every load",
    )
    add.add_argument(
        "--guild", type=int, help="the guild this version belongs to (default: global)"
    )
    add.add_argument(
        "--activate", action="store_true", help="make it the active one (of its guild, or global)"
    )
    registry_sub.add_parser("list", help="all versions (global and every guild's), newest first")
    promote = registry_sub.add_parser("promote", help="make a version the active one")
    promote.add_argument("version_id", type=int)
    registry.set_defaults(handler=cmd_registry)
    _register_outbox(subcommands)


def _factory() -> Any:
    from db.engine import make_engine, make_session_factory

    return make_session_factory(make_engine(get_settings().database_url))


def _parse_params(pairs: list[str]) -> dict[str, Any]:
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


def job_view(job: Any) -> dict[str, Any]:
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


def cmd_jobs(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from db.engine import run_transaction
    from db.jobs import get_job, request_cancel
    from db.models import TERMINAL_JOB_STATUSES, Job, JobStatus

    factory = _factory()
    if args.jobs_command == "submit":
        from jobqueue.app import make_celery
        from jobqueue.submit import submit_job

        job_id = submit_job(
            make_celery(get_settings()),
            factory,
            args.kind,
            _parse_params(args.param),
            guild_id=args.guild,
        )
        if not args.wait:
            print(json.dumps({"id": str(job_id), "status": "queued"}))
            return 0
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            job = run_transaction(factory, lambda s: job_view(get_job(s, job_id)))
            if JobStatus(job["status"]) in TERMINAL_JOB_STATUSES:
                print(json.dumps(job, indent=2))
                return 0 if job["status"] == "succeeded" else 1
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} still not finished after {args.timeout:.0f} s")
    if args.jobs_command == "status":
        view = run_transaction(factory, lambda s: job_view(get_job(s, uuid.UUID(args.job_id))))
        print(json.dumps(view, indent=2))
        return 0
    if args.jobs_command == "cancel":
        view = run_transaction(
            factory, lambda s: job_view(request_cancel(s, uuid.UUID(args.job_id)))
        )
        print(json.dumps(view, indent=2))
        return 0
    query = select(Job).order_by(Job.created_at.desc()).limit(args.limit)
    if args.status:
        query = query.where(Job.status == JobStatus(args.status))
    views = run_transaction(factory, lambda s: [job_view(j) for j in s.scalars(query)])
    print(json.dumps(views, indent=2))
    return 0


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The celery command line ``hps worker`` runs."""
    from worker.process import worker_argv as celery_worker_argv

    return celery_worker_argv(
        queues=args.queues,
        pool=args.pool,
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        hostname=args.hostname,
    )


def cmd_worker(args: argparse.Namespace) -> int:
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    argv = worker_argv(args)
    import sys

    from celery.__main__ import main as celery_main

    sys.argv = argv
    celery_main()
    return 0


def _checkpoint_sha256(path: Path, kind: Any, pinned: str | None) -> tuple[str, str]:
    """The sha256 to register for ``path`` and what it was checked against.

    The file's own sha256 is always computed (and is what gets registered); it must equal
    ``--sha256`` when given, else the ``<file>.sha256`` sidecar that ``hps models fetch``
    wrote, when there is one. A LoRA is a folder: its weights file is what is hashed."""
    from db.models import ModelKind
    from hps.checkpoints import (
        LORA_WEIGHTS_FILE,
        normalize_sha256,
        read_sidecar,
        sha256_of_file,
    )

    if kind == ModelKind.lora:
        if not path.is_dir():
            raise FileNotFoundError(f"no LoRA folder at {path}")
        hashed = path / LORA_WEIGHTS_FILE
    else:
        hashed = path
    if not hashed.is_file():
        raise FileNotFoundError(f"no checkpoint at {hashed}")
    actual = sha256_of_file(hashed)
    expected: str | None = normalize_sha256(pinned) if pinned else read_sidecar(hashed)
    source = "--sha256" if pinned else f"{hashed.name}.sha256"
    if expected is None:
        return actual, "nothing (no --sha256, no sidecar): computed from the file"
    if expected != actual:
        raise ValueError(
            f"{hashed}: sha256 is {actual}, but {source} says {expected}; not registered"
        )
    return actual, source


def cmd_registry(args: argparse.Namespace) -> int:
    from db.engine import run_transaction
    from db.models import ModelKind
    from db.registry import list_model_versions, promote_model_version, register_model_version

    factory = _factory()

    def describe(version: Any) -> dict[str, Any]:
        return {
            "id": version.id,
            "kind": version.kind.value,
            "guild_id": version.guild_id,
            "name": version.name,
            "architecture": version.architecture,
            "status": version.status.value,
            "checkpoint_key": version.checkpoint_key,
            "checkpoint_sha256": version.checkpoint_sha256,
            "metrics": version.metrics,
            "created_at": version.created_at.isoformat(),
        }

    if args.registry_command == "add":
        settings = get_settings()
        assert settings.models_dir is not None
        path = Path(args.checkpoint).expanduser().resolve()
        digest, digest_from = _checkpoint_sha256(path, ModelKind(args.kind), args.sha256)
        key = (
            str(path.relative_to(settings.models_dir))
            if path.is_relative_to(settings.models_dir)
            else str(path)
        )

        def add(session: Any) -> dict[str, Any]:
            version = register_model_version(
                session,
                kind=ModelKind(args.kind),
                name=args.name,
                checkpoint_key=key,
                architecture=args.arch,
                checkpoint_sha256=digest,
                guild_id=args.guild,
            )
            if args.activate:
                promote_model_version(session, version.id)
            return {**describe(version), "sha256_checked_against": digest_from}

        print(json.dumps(run_transaction(factory, add), indent=2))
        return 0
    if args.registry_command == "promote":
        view = run_transaction(
            factory, lambda s: describe(promote_model_version(s, args.version_id))
        )
        print(json.dumps(view, indent=2))
        return 0
    views = run_transaction(factory, lambda s: [describe(v) for v in list_model_versions(s)])
    print(json.dumps(views, indent=2))
    return 0


def _register_outbox(subcommands: argparse._SubParsersAction) -> None:
    outbox = subcommands.add_parser("outbox", help="results the bot could not post (dead letters)")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    dead = outbox_sub.add_parser("dead", help="dead letters, most recent first, with the reason")
    dead.add_argument("--limit", type=int, default=50)
    retry = outbox_sub.add_parser("retry", help="post a dead letter again (from attempt one)")
    retry.add_argument("outbox_id", type=int)
    outbox.set_defaults(handler=cmd_outbox)


def cmd_outbox(args: argparse.Namespace) -> int:
    from db.engine import run_transaction
    from db.outbox import list_dead_letters, requeue_dead_letter

    def describe(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "kind": row.kind,
            "job_id": str(row.job_id) if row.job_id else None,
            "guild_id": row.guild_id,
            "channel_id": row.channel_id,
            "attempts": row.attempts,
            "created_at": row.created_at.isoformat(),
            "dead_at": row.dead_at.isoformat() if row.dead_at else None,
            "next_attempt_at": row.next_attempt_at.isoformat(),
            "reason": row.last_error,
        }

    factory = _factory()
    if args.outbox_command == "retry":
        view = run_transaction(factory, lambda s: describe(requeue_dead_letter(s, args.outbox_id)))
        print(json.dumps(view, indent=2))
        return 0
    views = run_transaction(
        factory, lambda s: [describe(r) for r in list_dead_letters(s, args.limit)]
    )
    print(json.dumps(views, indent=2))
    return 0
