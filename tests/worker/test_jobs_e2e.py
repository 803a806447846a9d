"""Jobs through the real queue: Redis broker, a Celery worker process, PostgreSQL, tiny models."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.ingest import ChoiceIn, GenerationIn, record_choice, record_generation
from db.jobs import request_cancel
from db.models import ChoiceMethod, JobStatus, ModelStatus, ModelVersion, Score
from hps.scoring import build_scorer
from media.store import LocalImageStore
from tests.factories import stored_image, stored_planted_set
from tests.hps.datasets import planted_image
from tests.worker.fixtures import queue_fixtures
from tests.worker.harness import (
    count,
    outbox_rows,
    register_tiny_model,
    submit,
    submit_unchecked,
    wait_for_job,
)

GUILD = 2  # the community's server: its admins' jobs run in its scope


data_dir, worker, client = queue_fixtures("worker-data")


@pytest.fixture
def store(data_dir: Path) -> LocalImageStore:
    return LocalImageStore(data_dir / "images")


def community(
    factory: sessionmaker[Session], store: LocalImageStore, generations: int, *, seed: int
) -> None:
    """Generations of 4 images whose planted (red-disc) image every voter picks."""
    rng = random.Random(seed)
    with factory() as session, session.begin():
        for index in range(generations):
            chosen = rng.randrange(4)
            images = stored_planted_set(store, rng, chosen)
            recorded = record_generation(
                session,
                GenerationIn(
                    source_message_id=9_000_000 + seed * 10_000 + index,
                    channel_id=1,
                    guild_id=GUILD,
                    prompt=f"a scene number {seed}-{index}",
                    generator="test",
                    images=images,
                    requester_id=500 + index % 7,
                ),
            )
            for voter in (600, 601):
                record_choice(
                    session, ChoiceIn(voter, chosen, ChoiceMethod.button, recorded.generation_id)
                )


def test_score_job_end_to_end(
    worker: Any,
    client: Celery,
    pg_factory: sessionmaker[Session],
    data_dir: Path,
    store: LocalImageStore,
) -> None:
    register_tiny_model(pg_factory, data_dir / "models", "score-e2e", seed=1)
    images = [stored_image(store, planted_image(random.Random(i), i == 0)) for i in range(3)]
    job_id = submit(
        client,
        pg_factory,
        "score",
        {"prompt": "a red disc", "images": [i.sha256 for i in images]},
        requested_by=77,
        channel_id=5,
    )
    job = wait_for_job(pg_factory, job_id)
    assert job.status == JobStatus.succeeded, job.error
    [row] = outbox_rows(pg_factory, job_id)
    assert row.kind == "score_result" and row.channel_id == 5
    expected = build_scorer(
        None, data_dir / "models" / "score-e2e.safetensors", device="cpu"
    ).score("a red disc", [store.get(i.sha256) for i in images])
    got = [entry["score"] for entry in row.payload["scores"]]
    assert got == pytest.approx(expected, abs=1e-3)
    assert row.payload["model_version"]["name"] == "score-e2e"
    assert row.payload["requested_by"] == 77


def test_rank_job_stores_scores_once(
    worker: Any,
    client: Celery,
    pg_factory: sessionmaker[Session],
    data_dir: Path,
    store: LocalImageStore,
) -> None:
    register_tiny_model(pg_factory, data_dir / "models", "rank-e2e", seed=2)
    community(pg_factory, store, 1, seed=3)
    with pg_factory() as session:
        from db.models import Generation

        generation_id = session.scalar(select(Generation.id))
    for _ in range(2):
        job_id = submit(
            client, pg_factory, "rank", {"generation_id": generation_id}, guild_id=GUILD
        )
        assert wait_for_job(pg_factory, job_id).status == JobStatus.succeeded
    assert count(pg_factory, Score) == 4
    ranking = outbox_rows(pg_factory, job_id)[0].payload["ranking"]
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)


def test_train_job_promotes_a_better_candidate_and_refuses_one_that_is_not(
    worker: Any,
    client: Celery,
    pg_factory: sessionmaker[Session],
    data_dir: Path,
    store: LocalImageStore,
) -> None:
    first = register_tiny_model(pg_factory, data_dir / "models", "start", seed=4)
    community(pg_factory, store, 120, seed=5)

    same = submit(
        client, pg_factory, "train", {"lr": 0.0, "steps": 3, "batch_size": 8}, guild_id=GUILD
    )
    job = wait_for_job(pg_factory, same, timeout=300)
    assert job.status == JobStatus.succeeded, job.error
    assert job.result["promoted"] is False
    assert job.result["decision"].startswith("kept as candidate: top-1 +0.0%")
    with pg_factory() as session:
        statuses = {v.name: v.status for v in session.scalars(select(ModelVersion))}
    assert statuses["start"] == ModelStatus.active
    assert statuses[job.result["candidate_name"]] == ModelStatus.candidate

    better = submit(
        client, pg_factory, "train", {"lr": 1e-3, "epochs": 3, "batch_size": 8}, guild_id=GUILD
    )
    job = wait_for_job(pg_factory, better, timeout=300)
    assert job.status == JobStatus.succeeded, job.error
    metrics = job.result["metrics"]
    assert job.result["promoted"] is True, job.result["decision"]
    assert metrics["candidate"]["top1_accuracy"] > metrics["baseline"]["top1_accuracy"]
    assert Path(job.result["report_png"]).read_bytes()[:4] == b"\x89PNG"
    with pg_factory() as session:
        active = session.scalars(
            select(ModelVersion)
            .where(ModelVersion.status == ModelStatus.active)
            .order_by(ModelVersion.id)
        ).all()
        # The guild's own model is active for it; the global one it started from stays
        # active for every other guild.
        assert [(v.id, v.guild_id) for v in active] == [
            (first, None),
            (job.result["model_version_id"], GUILD),
        ]
        assert active[1].trained_on["train_sets"] > 0
        assert active[1].trained_on["scope"] == f"guild {GUILD}"
    [row] = outbox_rows(pg_factory, better)
    assert row.kind == "train_report"

    # The next score job uses the promoted model without a worker restart.
    image = stored_image(store, planted_image(random.Random(1), True))
    job_id = submit(
        client, pg_factory, "score", {"prompt": "x", "images": [image.sha256]}, guild_id=GUILD
    )
    assert wait_for_job(pg_factory, job_id).result["model_version"]["id"] == active[1].id
    elsewhere = submit(
        client, pg_factory, "score", {"prompt": "x", "images": [image.sha256]}, guild_id=GUILD + 1
    )
    assert wait_for_job(pg_factory, elsewhere).result["model_version"]["id"] == first


def test_failures_are_readable_and_the_worker_keeps_serving(
    worker: Any,
    client: Celery,
    pg_factory: sessionmaker[Session],
    data_dir: Path,
    store: LocalImageStore,
) -> None:
    models = data_dir / "models"
    register_tiny_model(pg_factory, models, "healthy", seed=6)
    image = stored_image(store, planted_image(random.Random(2), False))

    deleted = submit(client, pg_factory, "score", {"prompt": "x", "images": ["ab" * 32]})
    job = wait_for_job(pg_factory, deleted)
    assert job.status == JobStatus.failed
    assert job.error == f"image {'ab' * 32} is no longer stored (was it deleted?)"
    assert outbox_rows(pg_factory, deleted)[0].kind == "job_failed"

    gone = submit(client, pg_factory, "rank", {"generation_id": 123456}, guild_id=GUILD)
    assert (
        wait_for_job(pg_factory, gone).error
        == "generation 123456 no longer exists (was it deleted?)"
    )

    missing = register_tiny_model(pg_factory, models, "missing", seed=7, activate=False)
    (models / "missing.safetensors").unlink()
    job_id = submit(
        client,
        pg_factory,
        "score",
        {"prompt": "x", "images": [image.sha256], "model_version_id": missing},
    )
    job = wait_for_job(pg_factory, job_id)
    assert job.status == JobStatus.failed
    assert job.error.startswith(f"the checkpoint of model version {missing} is missing")
    # The requester is told briefly: no path (the detail above is for admins).
    [failed] = outbox_rows(pg_factory, job_id)
    assert (
        failed.payload["error"]
        == "the model's files are missing or damaged; the admins can see which"
    )

    corrupt = register_tiny_model(pg_factory, models, "corrupt", seed=8, activate=False)
    (models / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    job_id = submit(
        client,
        pg_factory,
        "score",
        {"prompt": "x", "images": [image.sha256], "model_version_id": corrupt},
    )
    job = wait_for_job(pg_factory, job_id)
    # Its registered sha256 no longer matches: refused before it is even parsed.
    assert job.status == JobStatus.failed and "is not the registered file" in job.error

    healthy = submit(client, pg_factory, "score", {"prompt": "x", "images": [image.sha256]})
    assert wait_for_job(pg_factory, healthy).status == JobStatus.succeeded
    assert worker.process.poll() is None


def test_a_job_with_malformed_params_fails_with_a_clear_message(
    worker: Any, client: Celery, pg_factory: sessionmaker[Session]
) -> None:
    """Parameters are checked by the contract when the job arrives: a row no client checked
    (an older bot's, one written by hand) fails with a message naming the kind and the field,
    and the worker goes on serving."""
    bad = submit_unchecked(
        client, pg_factory, "rank", {"generation_id": "the red one"}, guild_id=GUILD, channel_id=5
    )
    job = wait_for_job(pg_factory, bad)
    reason = "bad rank parameters: generation_id must be a whole number, not 'the red one'"
    assert job.status == JobStatus.failed and job.error == reason
    [row] = outbox_rows(pg_factory, bad)
    assert row.kind == "job_failed" and row.payload["error"] == reason

    unknown = submit_unchecked(client, pg_factory, "stats", {"dayz": 3}, channel_id=5)
    assert wait_for_job(pg_factory, unknown).error == (
        "bad stats parameters: dayz is not a parameter of this kind"
    )
    fine = submit(client, pg_factory, "stats", {"days": 3}, channel_id=5)
    assert wait_for_job(pg_factory, fine).status == JobStatus.succeeded
    assert worker.process.poll() is None


def test_cancelling_a_running_job(
    worker: Any,
    client: Celery,
    pg_factory: sessionmaker[Session],
    data_dir: Path,
    store: LocalImageStore,
) -> None:
    register_tiny_model(pg_factory, data_dir / "models", "cancel", seed=9)
    community(pg_factory, store, 60, seed=10)
    job_id = submit(
        client, pg_factory, "train", {"lr": 1e-3, "epochs": 50, "batch_size": 4}, guild_id=GUILD
    )
    wait_for_job(pg_factory, job_id, until=lambda job: job.progress > 0.01, timeout=120)
    with pg_factory() as session, session.begin():
        request_cancel(session, job_id)
    job = wait_for_job(pg_factory, job_id, timeout=60)
    assert job.status == JobStatus.cancelled
    assert count(pg_factory, ModelVersion) == 1  # nothing registered


def test_operators_cli_without_discord(
    worker: Any,
    pg_url: str,
    pg_factory: sessionmaker[Session],
    data_dir: Path,
    store: LocalImageStore,
) -> None:
    import json
    import subprocess
    import sys

    from tests.worker.harness import ROOT, worker_env

    env = worker_env(pg_url, data_dir)

    def hps(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    register_tiny_model(pg_factory, data_dir / "models", "cli-model", seed=11, activate=False)
    added = hps(
        "registry",
        "add",
        "--name",
        "cli-active",
        "--arch",
        "tiny",
        "--checkpoint",
        str(data_dir / "models" / "cli-model.safetensors"),
        "--activate",
    )
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["status"] == "active"
    assert json.loads(added.stdout)["checkpoint_key"] == "cli-model.safetensors"

    image = stored_image(store, planted_image(random.Random(3), True))
    done = hps(
        "jobs",
        "submit",
        "score",
        "--param",
        "prompt=a red disc",
        "--param",
        f'images=["{image.sha256}"]',
        "--wait",
        "--timeout",
        "60",
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded"
    assert job["result"]["model_version"]["name"] == "cli-active"
    status = json.loads(hps("jobs", "status", job["id"]).stdout)
    assert status["result"] == job["result"]
    listed = json.loads(hps("jobs", "list", "--limit", "5").stdout)
    assert job["id"] in [row["id"] for row in listed]
    unknown = hps("jobs", "submit", "paint")
    assert unknown.returncode == 2 and "unknown job kind 'paint'" in unknown.stderr


def test_worker_command_line() -> None:
    import argparse

    from cli.commands.worker import worker_argv

    argv = worker_argv(
        argparse.Namespace(
            queues="gpu", pool="prefork", concurrency=1, loglevel="INFO", hostname=None
        )
    )
    assert argv[:4] == ["celery", "-A", "worker.app", "worker"]
    assert argv[4:6] == ["--queues", "gpu"] and "--concurrency" in argv and "1" in argv
