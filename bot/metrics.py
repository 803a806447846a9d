"""Prometheus metrics of the bot process, served on ``BOT_METRICS_PORT`` (0 = off).

The metric objects live in their own registry (:data:`REGISTRY`), so that the bot's endpoint
shows exactly these plus the process collectors, and tests can read values with
``REGISTRY.get_sample_value(...)``. Bot code calls the small helpers below rather than the
objects. Label values are reduced to short lower-case identifiers (anything else becomes
``other``), which bounds cardinality and means no token or free text can reach the output.

Exposed (all prefixed ``hps_bot_``):

- ``events_ingested_total{adapter}``: generations recorded from Discord messages, by adapter;
- ``choices_recorded_total{how}``: picks recorded (button, reaction, upscale, vote, ...);
- ``errors_total{kind}``: failures the bot handled (download refused, db error, ...);
- ``gateway_reconnects_total``: gateway sessions resumed or re-identified after a drop;
- ``outbox_retries_total{reason}``: result posts that failed for a reason that may pass
  (``server_error``, ``rate_limited``, ``network``, ``timeout``, ``unexpected``) and were
  rescheduled with backoff;
- ``outbox_dead_letters_total{reason}``: results given up on (``discord_refused``,
  ``file_missing``, ``file_corrupt``, ``retries_exhausted``), kept for admins
  (``hps outbox dead``);
- ``interaction_ack_seconds``: time from an interaction's creation to its acknowledgement
  (Discord's deadline is 3 s; the buckets are dense below it).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

# Interaction acknowledgements must happen within 3 s; most should take a few tens of ms.
ACK_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0)

EVENTS_INGESTED = Counter(
    "events_ingested",
    "Generations recorded from Discord messages, by harvesting adapter",
    ["adapter"],
    namespace="hps_bot",
    registry=REGISTRY,
)
CHOICES_RECORDED = Counter(
    "choices_recorded",
    "Picks recorded, by how they were made (button, reaction, upscale, vote)",
    ["how"],
    namespace="hps_bot",
    registry=REGISTRY,
)
ERRORS = Counter(
    "errors",
    "Failures the bot handled, by kind",
    ["kind"],
    namespace="hps_bot",
    registry=REGISTRY,
)
GATEWAY_RECONNECTS = Counter(
    "gateway_reconnects",
    "Gateway sessions resumed or re-identified after a disconnect",
    namespace="hps_bot",
    registry=REGISTRY,
)
OUTBOX_RETRIES = Counter(
    "outbox_retries",
    "Result posts that failed for a passing reason and were rescheduled, by reason",
    ["reason"],
    namespace="hps_bot",
    registry=REGISTRY,
)
OUTBOX_DEAD_LETTERS = Counter(
    "outbox_dead_letters",
    "Results that will not be posted (dead letters), by reason",
    ["reason"],
    namespace="hps_bot",
    registry=REGISTRY,
)
INTERACTION_ACK = Histogram(
    "interaction_ack_seconds",
    "Seconds from an interaction's creation to its acknowledgement (deadline 3 s)",
    namespace="hps_bot",
    buckets=ACK_BUCKETS,
    registry=REGISTRY,
)

_LABEL = re.compile(r"[a-z][a-z0-9_]{0,39}")
_server_lock = threading.Lock()
_served_ports: set[int] = set()


def label_value(value: object) -> str:
    """A safe label value: a short lower-case identifier, else ``other``. An enum member
    gives its value; ``-``, ``.``, ``:`` and spaces become ``_``."""
    text = str(getattr(value, "value", value)).strip().lower()
    text = re.sub(r"[\s\-.:/]+", "_", text)
    return text if _LABEL.fullmatch(text) else "other"


def count_event(adapter: str) -> None:
    """One generation recorded by ``adapter`` (e.g. ``multi_attachment``, ``midjourney``)."""
    EVENTS_INGESTED.labels(adapter=label_value(adapter)).inc()


def count_choice(how: object) -> None:
    """One pick recorded; ``how`` is a ChoiceMethod or its value (button, reaction, ...)."""
    CHOICES_RECORDED.labels(how=label_value(how)).inc()


def count_error(kind: object) -> None:
    """One handled failure. ``kind`` is a short identifier (``download_refused``,
    ``image_rejected``, ``database``, ``delivery``, ...) or an exception, which counts under
    its class name (never its message)."""
    if isinstance(kind, BaseException):
        kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(kind).__name__)
    ERRORS.labels(kind=label_value(kind)).inc()


def count_reconnect() -> None:
    """The gateway connection was resumed or re-identified after a drop."""
    GATEWAY_RECONNECTS.inc()


def count_outbox_retry(reason: str) -> None:
    """A result post failed for a reason that may pass; it will be retried later."""
    OUTBOX_RETRIES.labels(reason=label_value(reason)).inc()


def count_dead_letter(reason: str) -> None:
    """A result became a dead letter (``discord_refused``, ``retries_exhausted``, ...)."""
    OUTBOX_DEAD_LETTERS.labels(reason=label_value(reason)).inc()


def observe_ack(seconds: float) -> None:
    """Record how long acknowledging an interaction took."""
    INTERACTION_ACK.observe(max(0.0, float(seconds)))


def observe_ack_since(created_at: datetime) -> float:
    """Record the time from ``created_at`` (an aware datetime, e.g. ``interaction.created_at``
    from the snowflake) until now; return it."""
    seconds = max(0.0, (datetime.now(UTC) - created_at).total_seconds())
    INTERACTION_ACK.observe(seconds)
    return seconds


@contextmanager
def ack_timer() -> Iterator[None]:
    """Time a block (e.g. ``await interaction.response.defer()``) as an acknowledgement."""
    started = time.perf_counter()
    try:
        yield
    finally:
        observe_ack(time.perf_counter() - started)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve :data:`REGISTRY` on ``http://addr:port/metrics`` from a daemon thread; 0 = off.
    Calling it again for a port already served does nothing."""
    if not port:
        return
    with _server_lock:
        if port in _served_ports:
            return
        start_http_server(port, addr=addr, registry=REGISTRY)
        _served_ports.add(port)
