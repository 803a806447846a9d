"""``hps worker``: a Celery worker of this platform."""

from __future__ import annotations

import argparse
import os


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps worker`` to the ``hps`` parser."""
    worker = subcommands.add_parser("worker", help="start a Celery worker")
    worker.add_argument("--queues", default="gpu,default")
    worker.add_argument("--gpu", help="pin to this GPU index (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--pool", choices=["solo", "prefork"], default="prefork")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--hostname", help="Celery node name (default: hps-<queues>@<host>)")
    worker.set_defaults(handler=cmd_worker)


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
    """Run the Celery worker in this process (pinned to ``--gpu`` when given)."""
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    argv = worker_argv(args)
    import sys

    from celery.__main__ import main as celery_main

    sys.argv = argv
    celery_main()
    return 0
