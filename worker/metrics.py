"""Prometheus metrics and logging of worker processes, as Celery signal receivers.

``worker/app.py`` imports this module; importing it connects the receivers.

Metrics (prefix ``hps_worker_``):

- ``task_duration_seconds{kind, outcome}``: wall time of each task run, by job kind (``score``,
  ``train``, ``stats``...; the task name for tasks that are not jobs) and outcome
  (``succeeded``, ``failed``, ``cancelled``, ``skipped``, ``retry``, ``error``);
- ``task_failures_total{kind, reason}``: ``job_failed`` (the job ended with a message for the
  user), ``exception`` (an exception escaped the task), ``time_limit`` (hard limit, the child
  was killed), ``worker_lost`` (the child died);
- ``task_retries_total{kind}``: automatic retries (database or broker trouble);
- ``model_load_seconds{kind}``: loading an HPS model (``hps``), the Stable Diffusion pipeline
  (``sd_pipeline``) or switching a LoRA in (``lora``);
- ``queue_depth{queue}``: messages waiting in the broker, measured when Prometheus scrapes
  (``queue_depth_up`` is 0 when the broker did not answer within 2 s).

**Prefork.** Tasks run in pool children, where ``task_prerun``/``task_postrun`` fire, while
the port must be served once, by the parent. Collecting in the parent through the signals is
not possible (they fire in the child; the parent only sees ``task_failure`` for hard time
limits and lost children), so the worker uses prometheus_client's *multiprocess mode*: when
``WORKER_METRICS_PORT`` is set, importing this module (in the parent, before the pool forks)
points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh private directory (or empties the one given),
every process writes its samples to memory-mapped files there, and the parent's HTTP server
(started on ``worker_ready``) merges them at scrape time with a ``MultiProcessCollector`` and
asks the broker for the queue depths. Counters and histograms of children that exited (worker
recycling) keep counting. The solo pool uses the same path. Each worker needs its own port
and, if you set ``PROMETHEUS_MULTIPROC_DIR`` yourself, its own directory.

**Logging.** The ``setup_logging`` receiver replaces Celery's logging set-up with
:func:`config.logging_setup.configure_logging` (``LOG_FORMAT`` text or JSON, secrets
redacted), at the level given by ``--loglevel``.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery.signals import (
    setup_logging,
    task_failure,
    task_postrun,
    task_prerun,
    task_retry,
    worker_ready,
)

from config import get_settings
from jobqueue.names import TASK_KINDS

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_READY_ENV = "HPS_METRICS_DIR_READY"


def _configured_port() -> int:
    try:
        return int(get_settings().worker_metrics_port)
    except Exception:  # invalid settings are reported by whoever reads them first
        return 0


def _prepare_multiprocess_dir(port: int) -> str | None:
    """Switch prometheus_client to multiprocess mode before any metric exists (only when
    this worker serves metrics). Runs once per process tree: forked children inherit it."""
    path = os.environ.get(MULTIPROC_ENV)
    if not port:
        return path or None
    if os.environ.get(_READY_ENV) != path or not path:
        if not path:
            path = tempfile.mkdtemp(prefix="hps-worker-metrics-")
            os.environ[MULTIPROC_ENV] = path
            owner, created = os.getpid(), path

            def remove_dir() -> None:
                if os.getpid() == owner:  # not in forked children
                    shutil.rmtree(created, ignore_errors=True)

            atexit.register(remove_dir)
        else:  # samples of an earlier run would be added to this one's
            Path(path).mkdir(parents=True, exist_ok=True)
            for stale in Path(path).glob("*.db"):
                stale.unlink(missing_ok=True)
        os.environ[_READY_ENV] = path
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return path


MULTIPROCESS_DIR = _prepare_multiprocess_dir(_configured_port())

from prometheus_client import (  # noqa: E402  (after the multiprocess switch)
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402

REGISTRY = CollectorRegistry()

DURATION_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
    3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600,
)  # fmt: skip
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

TASK_DURATION = Histogram(
    "task_duration_seconds",
    "Wall time of task runs, by job kind and outcome",
    ["kind", "outcome"],
    namespace="hps_worker",
    buckets=DURATION_BUCKETS,
    registry=REGISTRY,
)
TASK_FAILURES = Counter(
    "task_failures",
    "Failed task runs, by job kind and reason",
    ["kind", "reason"],
    namespace="hps_worker",
    registry=REGISTRY,
)
TASK_RETRIES = Counter(
    "task_retries",
    "Automatic task retries (database or broker trouble), by job kind",
    ["kind"],
    namespace="hps_worker",
    registry=REGISTRY,
)
MODEL_LOAD = Histogram(
    "model_load_seconds",
    "Time to load a model into a worker process (hps, sd_pipeline, lora)",
    ["kind"],
    namespace="hps_worker",
    buckets=LOAD_BUCKETS,
    registry=REGISTRY,
)

_KIND_OF_TASK = {kind.task_name: kind.kind for kind in TASK_KINDS.values()}
_JOB_OUTCOMES = frozenset({"succeeded", "failed", "cancelled", "skipped"})


def kind_of(task_name: str | None) -> str:
    """The job kind a task runs (``hps.score_images`` -> ``score``), else the task name."""
    name = task_name or "unknown"
    return _KIND_OF_TASK.get(name, name)


def outcome_of(state: str | None, retval: Any) -> str:
    """The outcome label of a finished task run."""
    if state == "SUCCESS":
        return retval if isinstance(retval, str) and retval in _JOB_OUTCOMES else "succeeded"
    if state == "RETRY":
        return "retry"
    if state == "FAILURE":
        return "error"
    return (state or "unknown").lower()


def failure_reason(exception: BaseException | None) -> str:
    """Why a task failed, as a label value."""
    name = type(exception).__name__ if exception is not None else ""
    if name == "TimeLimitExceeded":
        return "time_limit"
    if name == "WorkerLostError":
        return "worker_lost"
    return "exception"


@contextmanager
def model_load_timer(kind: str) -> Iterator[None]:
    """Time a model load (``hps``, ``sd_pipeline``, ``lora``); failed loads are not timed."""
    started = time.perf_counter()
    yield
    MODEL_LOAD.labels(kind=kind).observe(time.perf_counter() - started)


# --- task signals (fire in the process that runs the task: the pool child under prefork) ---

_started: dict[str, float] = {}


@task_prerun.connect
def _task_started(task_id: str | None = None, **_kwargs: Any) -> None:
    if task_id is not None:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _task_finished(
    task_id: str | None = None,
    task: Any = None,
    retval: Any = None,
    state: str | None = None,
    **_kwargs: Any,
) -> None:
    started = _started.pop(task_id, None) if task_id is not None else None
    kind = kind_of(getattr(task, "name", None))
    outcome = outcome_of(state, retval)
    if started is not None:
        TASK_DURATION.labels(kind=kind, outcome=outcome).observe(time.monotonic() - started)
    if outcome == "failed":
        TASK_FAILURES.labels(kind=kind, reason="job_failed").inc()


@task_failure.connect
def _task_failed(
    sender: Any = None, exception: BaseException | None = None, **_kwargs: Any
) -> None:
    # In the child for exceptions a task raised; in the parent for hard time limits and
    # children that died. Both reach the scrape through the multiprocess files.
    TASK_FAILURES.labels(
        kind=kind_of(getattr(sender, "name", None)), reason=failure_reason(exception)
    ).inc()


@task_retry.connect
def _task_retried(sender: Any = None, **_kwargs: Any) -> None:
    TASK_RETRIES.labels(kind=kind_of(getattr(sender, "name", None))).inc()


# --- queue depth, measured at scrape time in the serving process ---


class QueueDepthCollector:
    """Asks the broker how many messages wait in each queue, when Prometheus scrapes (never
    inside a task). Redis: LLEN of the queue's keys (all priority levels); the SQLAlchemy
    broker: a count of its visible messages; AMQP: a passive declare. No answer within
    ``timeout_s``: ``hps_worker_queue_depth_up`` 0 and no depth samples."""

    def __init__(
        self,
        broker_url: str,
        queues: Sequence[str],
        transport_options: dict[str, Any] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.broker_url = broker_url
        self.queues = list(queues)
        self.transport_options = dict(transport_options or {})
        if broker_url.startswith(("redis", "rediss")):
            self.transport_options.update(
                socket_timeout=timeout_s, socket_connect_timeout=timeout_s
            )
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    @classmethod
    def for_app(cls, app: Any) -> QueueDepthCollector:
        """The queues and broker of a Celery app."""
        queues = [queue.name for queue in app.conf.task_queues or ()] or [
            app.conf.task_default_queue
        ]
        return cls(
            str(app.conf.broker_url),
            queues,
            dict(app.conf.broker_transport_options or {}),
        )

    def measure(self) -> dict[str, int]:
        """Messages waiting per queue (raises when the broker does not answer)."""
        from kombu import Connection

        sizes: dict[str, int] = {}
        with (
            self._lock,
            Connection(
                self.broker_url,
                connect_timeout=self.timeout_s,
                transport_options=self.transport_options,
            ) as connection,
        ):
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=self.timeout_s)
            for queue in self.queues:
                channel = connection.channel()
                try:
                    size = getattr(channel, "_size", None)  # kombu's virtual transports
                    if callable(size):
                        sizes[queue] = int(size(queue))
                    else:
                        sizes[queue] = _declared_size(channel, queue)
                finally:
                    channel.close()
        return sizes

    def describe(self) -> Iterable[Metric]:
        return [self._depth_family(), self._up_family()]

    def collect(self) -> Iterable[Metric]:
        depth, up = self._depth_family(), self._up_family()
        try:
            sizes = self.measure()
        except Exception as exc:
            log.debug("queue depth not available: %s", exc)
            up.add_metric([], 0)
        else:
            for queue, size in sorted(sizes.items()):
                depth.add_metric([queue], size)
            up.add_metric([], 1)
        return [depth, up]

    @staticmethod
    def _depth_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "hps_worker_queue_depth",
            "Messages waiting in the broker queue (not yet taken by a worker)",
            labels=["queue"],
        )

    @staticmethod
    def _up_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "hps_worker_queue_depth_up",
            "1 when the broker answered the queue depth query of this scrape",
        )


def _declared_size(channel: Any, queue: str) -> int:
    from amqp.exceptions import NotFound

    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except NotFound:
        return 0


# --- serving ---

_server_lock = threading.Lock()
_served_ports: set[int] = set()


def serving_registry(app: Any = None) -> CollectorRegistry:
    """What the endpoint shows: every process's samples (multiprocess mode) or this process's,
    plus the queue depths of ``app``'s broker."""
    registry = CollectorRegistry()
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        MultiProcessCollector(registry, path=path)
    else:
        registry.register(REGISTRY)
    if app is not None:
        registry.register(QueueDepthCollector.for_app(app))
    return registry


def start_worker_metrics_server(port: int, *, app: Any = None, addr: str = "0.0.0.0") -> None:
    """Serve the worker's metrics on ``http://addr:port/metrics`` from a daemon thread of this
    process (the parent of a prefork pool); 0 = off. A second call for the same port does
    nothing."""
    if not port:
        return
    with _server_lock:
        if port in _served_ports:
            return
        start_http_server(port, addr=addr, registry=serving_registry(app))
        _served_ports.add(port)


@worker_ready.connect
def _serve_metrics(sender: Any = None, **_kwargs: Any) -> None:
    # worker_ready fires once, in the parent, after the pool has started.
    port = _configured_port()
    if not port:
        return
    if not os.environ.get(MULTIPROC_ENV):
        log.warning("metrics: %s is not set; only this process's samples are served", MULTIPROC_ENV)
    try:
        start_worker_metrics_server(port, app=getattr(sender, "app", None))
    except OSError as exc:
        log.error("metrics: cannot serve on port %s (%s); the worker runs without", port, exc)
        return
    log.info("metrics: serving on port %s", port)


@setup_logging.connect
def _worker_logging(loglevel: Any = None, **_kwargs: Any) -> None:
    from config.logging_setup import configure_logging

    configure_logging(get_settings(), level=loglevel)
