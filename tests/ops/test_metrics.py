"""Prometheus endpoints of the bot and of a real prefork worker, scraped over real sockets on
127.0.0.1; values move with real events; no secret ever appears."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.models import ChoiceMethod, JobStatus

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "MTE5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz012345678"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


# --- the bot ---


def test_bot_metrics_endpoint() -> None:
    from bot import metrics

    port = free_port()
    metrics.start_metrics_server(0)  # off: nothing happens
    metrics.start_metrics_server(port, addr="127.0.0.1")
    metrics.start_metrics_server(port, addr="127.0.0.1")  # again: still one server
    before = scrape(port)
    base = {
        "event": sample(before, "hps_bot_events_ingested_total", adapter="midjourney") or 0,
        "choice": sample(before, "hps_bot_choices_recorded_total", how="upscale") or 0,
        "error": sample(before, "hps_bot_errors_total", kind="download_refused") or 0,
        "other": sample(before, "hps_bot_errors_total", kind="other") or 0,
        "reconnect": sample(before, "hps_bot_gateway_reconnects_total") or 0,
        "acks": sample(before, "hps_bot_interaction_ack_seconds_count") or 0,
        "fast": sample(before, "hps_bot_interaction_ack_seconds_bucket", le="0.25") or 0,
    }

    class DownloadRefused(Exception):
        pass

    metrics.count_event("midjourney")
    metrics.count_event("midjourney")
    metrics.count_choice(ChoiceMethod.upscale)
    metrics.count_error(DownloadRefused(f"https://cdn/x?token={TOKEN}"))
    metrics.count_error(TOKEN)  # someone passed free text: it becomes "other"
    metrics.count_reconnect()
    metrics.observe_ack(0.12)
    assert 0.4 < metrics.observe_ack_since(datetime.now(UTC) - timedelta(seconds=0.5)) < 5
    with metrics.ack_timer():
        pass

    after = scrape(port)
    assert sample(after, "hps_bot_events_ingested_total", adapter="midjourney") == base["event"] + 2
    assert sample(after, "hps_bot_choices_recorded_total", how="upscale") == base["choice"] + 1
    assert sample(after, "hps_bot_errors_total", kind="download_refused") == base["error"] + 1
    assert sample(after, "hps_bot_errors_total", kind="other") == base["other"] + 1
    assert sample(after, "hps_bot_gateway_reconnects_total") == base["reconnect"] + 1
    assert sample(after, "hps_bot_interaction_ack_seconds_count") == base["acks"] + 3
    assert sample(after, "hps_bot_interaction_ack_seconds_bucket", le="0.25") == base["fast"] + 2
    assert sample(after, "hps_bot_interaction_ack_seconds_bucket", le="3.0") is not None
    assert TOKEN not in after and TOKEN.lower() not in after
    assert metrics.REGISTRY.get_sample_value("hps_bot_gateway_reconnects_total") is not None


def test_bot_label_values_are_bounded() -> None:
    from bot.metrics import label_value

    assert label_value("multi-attachment") == "multi_attachment"
    assert label_value(ChoiceMethod.import_) == "import"
    assert label_value("x" * 80) == "other"
    assert label_value("Bot " + TOKEN) == "other"


# --- worker pieces, in this process ---


def test_model_load_time_is_observed(tmp_path: Path) -> None:
    import torch

    from hps.architectures import build_model, get_architecture
    from hps.checkpoints import save_checkpoint
    from worker.metrics import REGISTRY
    from worker.model_cache import ModelCache, ModelRef

    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "m.safetensors",
        build_model(get_architecture("tiny")),
        {"architecture": "tiny", "preprocess": "pad", "base": {"kind": "random-init"}},
    )

    def loads() -> float:
        value = REGISTRY.get_sample_value("hps_worker_model_load_seconds_count", {"kind": "hps"})
        return value or 0.0

    before = loads()
    cache = ModelCache(tmp_path, "cpu")
    cache.scorer(ModelRef(1, "m", "tiny", "m.safetensors"))
    cache.scorer(ModelRef(1, "m", "tiny", "m.safetensors"))  # cached: no second load
    assert loads() == before + 1
    seconds = REGISTRY.get_sample_value("hps_worker_model_load_seconds_sum", {"kind": "hps"})
    assert seconds is not None and seconds > 0


def test_queue_depth_on_the_embedded_sqlalchemy_broker(tmp_path: Path) -> None:
    from jobqueue.app import make_celery
    from worker.metrics import QueueDepthCollector

    url = f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}"
    app = make_celery(load_settings(broker_url=url, hps_data_dir=tmp_path))
    app.send_task("hps.stats_report", args=["00000000-0000-0000-0000-000000000000"])
    collector = QueueDepthCollector.for_app(app)
    assert collector.measure() == {"gpu": 0, "default": 1}
    depth, up = collector.collect()
    assert [(s.labels, s.value) for s in up.samples] == [({}, 1)]
    assert {s.labels["queue"]: s.value for s in depth.samples} == {"gpu": 0, "default": 1}


def test_queue_depth_when_the_broker_does_not_answer() -> None:
    from worker.metrics import QueueDepthCollector

    collector = QueueDepthCollector(f"redis://127.0.0.1:{free_port()}/0", ["default"])
    started = time.monotonic()
    depth, up = collector.collect()
    assert time.monotonic() - started < 10
    assert depth.samples == [] and [s.value for s in up.samples] == [0]


def test_labels_of_task_runs() -> None:
    from worker.metrics import failure_reason, kind_of, outcome_of

    assert kind_of("hps.score_images") == "score" and kind_of("other.task") == "other.task"
    assert outcome_of("SUCCESS", "failed") == "failed"
    assert outcome_of("SUCCESS", {"x": 1}) == "succeeded"
    assert outcome_of("RETRY", None) == "retry" and outcome_of("FAILURE", None) == "error"
    assert failure_reason(type("TimeLimitExceeded", (Exception,), {})()) == "time_limit"
    assert failure_reason(type("WorkerLostError", (Exception,), {})()) == "worker_lost"
    assert failure_reason(ValueError()) == "exception"


# --- a real prefork worker ---


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("metrics-worker")
    (folder / "models").mkdir()
    return folder


@pytest.fixture(scope="module")
def worker_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def worker(pg_url: str, data_dir: Path, worker_port: int) -> Iterator[Any]:
    from tests.worker.harness import flush_broker, worker_env
    from worker.process import WorkerProcess

    flush_broker()
    env = worker_env(
        pg_url,
        data_dir,
        WORKER_METRICS_PORT=str(worker_port),
        LOG_FORMAT="json",
        DISCORD_TOKEN=TOKEN,
        WORKER_MAX_TASKS_PER_CHILD="1",  # each task in a new child: samples of dead ones count
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    # Only the default queue: a gpu job stays in the broker, so its depth can be seen.
    process = WorkerProcess(
        env, data_dir / "worker.log", name="metrics", queues="default", pool="prefork", cwd=ROOT
    )
    yield process
    process.stop()
    flush_broker()


def test_prefork_worker_serves_metrics_of_its_children(
    worker: Any, worker_port: int, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    from jobqueue.app import make_celery
    from jobqueue.contracts import ScoreParams, StatsParams
    from jobqueue.submit import JobOrigin, submit_job
    from tests.worker.harness import BROKER_URL, pool_children, submit_unchecked, wait_for_job

    assert pool_children(worker), "expected a prefork pool child"
    first = scrape(worker_port)
    assert sample(first, "hps_worker_queue_depth_up") == 1
    assert sample(first, "hps_worker_queue_depth", queue="default") == 0
    assert sample(first, "hps_worker_queue_depth", queue="gpu") == 0
    assert sample(first, "hps_worker_task_duration_seconds_count", kind="stats") is None

    client = make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=data_dir))
    done = submit_job(client, pg_factory, StatsParams(days=7), JobOrigin(channel_id=5))
    assert wait_for_job(pg_factory, done, timeout=120).status == JobStatus.succeeded
    failed = submit_unchecked(client, pg_factory, "stats", {"top": 0}, channel_id=5)
    assert wait_for_job(pg_factory, failed, timeout=120).status == JobStatus.failed
    waiting = submit_job(client, pg_factory, ScoreParams(prompt="x", images=[]))

    deadline = time.monotonic() + 15
    while True:  # the postrun signal fires just after the job row is written
        second = scrape(worker_port)
        counted = sample(
            second, "hps_worker_task_duration_seconds_count", kind="stats", outcome="failed"
        )
        if counted == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (
        sample(second, "hps_worker_task_duration_seconds_count", kind="stats", outcome="succeeded")
        == 1
    )
    assert counted == 1
    assert sample(second, "hps_worker_task_failures_total", kind="stats", reason="job_failed") == 1
    assert sample(second, "hps_worker_queue_depth", queue="gpu") == 1  # the score job waits
    assert sample(second, "hps_worker_queue_depth", queue="default") == 0
    assert TOKEN not in second
    with pg_factory() as session:
        from db.jobs import get_job

        assert get_job(session, waiting).status == JobStatus.queued

    # The tasks ran in two pool children, one after the other (the first exited before the
    # scrape); the endpoint is served by the parent and counted both.
    log_text = (data_dir / "worker.log").read_text()
    assert TOKEN not in log_text
    records = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert any(r["message"].endswith(" ready.") for r in records)
    ran = [
        r
        for r in records
        if r["message"].startswith("Task hps.stats_report[") and " succeeded in " in r["message"]
    ]
    received = [
        r
        for r in records
        if r["message"].startswith("Task hps.stats_report[") and r["message"].endswith(" received")
    ]
    assert len(ran) == 2 and len(received) == 2
    children = {r["process"] for r in ran}
    assert len(children) == 2 and worker.process.pid not in children
    assert {r["process"] for r in received} == {worker.process.pid}
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
