"""The outbox cannot jam: due rows only, backoff after a failure that may pass, dead letters
after one that cannot (or too many), a lease while a row is being posted, and requeueing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import OutboxMessage, utcnow
from db.outbox import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    CLAIM_LEASE_S,
    MAX_ATTEMPTS,
    OUTBOX_CHANNEL,
    OutboxRowNotDead,
    backoff_delay,
    claim_pending_outbox,
    list_dead_letters,
    mark_outbox_delivered,
    record_outbox_failure,
    requeue_dead_letter,
    write_outbox,
)
from tests.conftest import libpq_dsn

ROOT = Path(__file__).resolve().parents[2]


def middle() -> float:
    return 0.5  # no jitter


def write_rows(factory: sessionmaker[Session], count: int, channel_id: int = 1) -> list[int]:
    with factory() as session, session.begin():
        ids = [
            write_outbox(session, "notice", {"n": n}, channel_id=channel_id) for n in range(count)
        ]
    assert all(i is not None for i in ids)
    return [int(i) for i in ids if i is not None]


def row(factory: sessionmaker[Session], outbox_id: int) -> OutboxMessage:
    with factory() as session:
        found = session.get_one(OutboxMessage, outbox_id)
        session.expunge(found)
        return found


def test_backoff_doubles_from_five_seconds_to_a_cap_with_a_little_jitter() -> None:
    schedule = [backoff_delay(n, rand=middle).total_seconds() for n in range(1, 11)]
    assert schedule == [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]
    assert (BACKOFF_BASE_S, BACKOFF_CAP_S) == (5.0, 600.0)
    assert backoff_delay(1, rand=lambda: 0.0).total_seconds() == pytest.approx(4.5)
    assert backoff_delay(1, rand=lambda: 1.0).total_seconds() == pytest.approx(5.5)
    assert backoff_delay(10_000, rand=lambda: 1.0).total_seconds() == pytest.approx(660.0)
    # The whole retry window (MAX_ATTEMPTS attempts) rides out a Discord outage of ~30 min.
    window = sum(backoff_delay(n, rand=middle).total_seconds() for n in range(1, MAX_ATTEMPTS))
    assert 25 * 60 < window < 35 * 60


def test_claim_takes_due_rows_soonest_first_and_leases_them(
    factory: sessionmaker[Session],
) -> None:
    a, b, c = write_rows(factory, 3)
    now = utcnow()
    with factory() as session, session.begin():
        session.execute(  # b backs off; c became due before a
            update(OutboxMessage)
            .where(OutboxMessage.id == b)
            .values(next_attempt_at=now + timedelta(seconds=30))
        )
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == c)
            .values(next_attempt_at=now - timedelta(seconds=30))
        )
    with factory() as session, session.begin():
        claimed = claim_pending_outbox(session, now=now)
        assert [(r.id, r.attempts) for r in claimed] == [(c, 1), (a, 1)]
    with factory() as session, session.begin():  # leased while being posted: not due
        assert claim_pending_outbox(session, now=now + timedelta(seconds=10)) == []
    with factory() as session, session.begin():
        assert [r.id for r in claim_pending_outbox(session, now=now + timedelta(seconds=31))] == [b]
    # A deliverer that died mid-post: the row is claimed again once its lease has run out.
    later = now + timedelta(seconds=CLAIM_LEASE_S + 1)
    with factory() as session, session.begin():
        # (both leased until the same moment: by id; b's lease runs longer)
        assert [(r.id, r.attempts) for r in claim_pending_outbox(session, now=later)] == [
            (a, 2),
            (c, 2),
        ]
        assert mark_outbox_delivered(session, c)
    assert row(factory, c).delivered_at is not None


def test_a_transiently_failing_row_backs_off_then_dies_with_its_reason(
    factory: sessionmaker[Session],
) -> None:
    [outbox_id] = write_rows(factory, 1)
    now = utcnow()
    waits = []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        with factory() as session, session.begin():
            [claimed] = claim_pending_outbox(session, now=now)
            assert claimed.attempts == attempt
            outcome = record_outbox_failure(
                session, outbox_id, f"server_error: 503 attempt {attempt}", now=now, rand=middle
            )
        assert outcome.attempts == attempt
        if attempt < MAX_ATTEMPTS:
            assert not outcome.dead and outcome.retry_at is not None
            waits.append((outcome.retry_at - now).total_seconds())
            with factory() as session, session.begin():  # not due before its time
                assert (
                    claim_pending_outbox(session, now=outcome.retry_at - timedelta(seconds=1)) == []
                )
            now = outcome.retry_at
        else:
            assert outcome.dead and outcome.retry_at is None
    assert waits == [5, 10, 20, 40, 80, 160, 320, 600, 600][: MAX_ATTEMPTS - 1]
    dead = row(factory, outbox_id)
    assert dead.dead_at is not None and dead.delivered_at is None
    assert dead.last_error == f"server_error: 503 attempt {MAX_ATTEMPTS}"
    with factory() as session, session.begin():
        assert claim_pending_outbox(session, now=now + timedelta(days=1)) == []
        # A second report of the same failure changes nothing (the notice goes out once).
        assert not record_outbox_failure(session, outbox_id, "again", now=now).dead
    with factory() as session:
        assert [r.id for r in list_dead_letters(session)] == [outbox_id]


def test_a_permanent_failure_is_dead_at_once(factory: sessionmaker[Session]) -> None:
    refused, fine = write_rows(factory, 2)
    with factory() as session, session.begin():
        claim_pending_outbox(session)
        outcome = record_outbox_failure(
            session,
            refused,
            "discord_refused: NotFound: 404 Not Found (error code: 10003): Unknown Channel",
            permanent=True,
        )
        assert outcome.dead and outcome.attempts == 1
        mark_outbox_delivered(session, fine)
    with factory() as session:
        [dead] = list_dead_letters(session)
        assert dead.id == refused and dead.last_error is not None
        assert dead.last_error.startswith("discord_refused: NotFound: 404")
        assert not mark_outbox_delivered(session, refused)  # a dead letter is never stamped


def test_poison_rows_do_not_hold_up_a_row_written_after_them(
    factory: sessionmaker[Session],
) -> None:
    poison = write_rows(factory, 20, channel_id=999)
    [good] = write_rows(factory, 1)
    now = utcnow()
    with factory() as session, session.begin():
        first = claim_pending_outbox(session, limit=20, now=now)
        assert [r.id for r in first] == poison
        for n, outbox_id in enumerate(poison):  # half refused, half failing for now
            record_outbox_failure(session, outbox_id, "x", permanent=n % 2 == 0, now=now)
    with factory() as session, session.begin():
        assert [r.id for r in claim_pending_outbox(session, limit=20, now=now)] == [good]


def test_requeue_a_dead_letter(factory: sessionmaker[Session]) -> None:
    dead_id, alive = write_rows(factory, 2)
    with factory() as session, session.begin():
        claim_pending_outbox(session)
        record_outbox_failure(session, dead_id, "file_missing: BlobNotFound: 'ab'", permanent=True)
    with factory() as session, session.begin():
        with pytest.raises(OutboxRowNotDead):
            requeue_dead_letter(session, alive)
        with pytest.raises(OutboxRowNotDead):
            requeue_dead_letter(session, 12345)
    with factory() as session, session.begin():
        requeued = requeue_dead_letter(session, dead_id)
        assert requeued.dead_at is None and requeued.attempts == 0
    with factory() as session, session.begin():
        assert list_dead_letters(session) == []
        [again] = claim_pending_outbox(session, now=utcnow() + timedelta(seconds=1))
        assert again.id == dead_id and again.attempts == 1
        assert again.last_error == "file_missing: BlobNotFound: 'ab'"  # until it is settled
        assert mark_outbox_delivered(session, dead_id)
    assert row(factory, dead_id).last_error is None
    with factory() as session, session.begin(), pytest.raises(OutboxRowNotDead):
        requeue_dead_letter(session, dead_id)  # delivered: nothing to requeue


def test_requeue_wakes_the_bot(pg_url: str, pg_factory: sessionmaker[Session]) -> None:
    [outbox_id] = write_rows(pg_factory, 1)
    with pg_factory() as session, session.begin():
        claim_pending_outbox(session)
        record_outbox_failure(session, outbox_id, "discord_refused: 403", permanent=True)
    with psycopg.connect(libpq_dsn(pg_url), autocommit=True) as listener:
        listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        with pg_factory() as session, session.begin():
            requeue_dead_letter(session, outbox_id)
        received = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert received == [str(outbox_id)]


def test_a_leased_row_is_not_claimed_by_a_second_deliverer(
    pg_factory: sessionmaker[Session],
) -> None:
    ids = write_rows(pg_factory, 3)
    with pg_factory() as a, a.begin():
        assert [r.id for r in claim_pending_outbox(a, limit=2)] == ids[:2]
    # The first deliverer committed its claim and is posting: the second gets only the rest.
    with pg_factory() as b, b.begin():
        assert [r.id for r in claim_pending_outbox(b)] == ids[2:]
    with pg_factory() as session:
        attempts = session.scalars(select(OutboxMessage.attempts).order_by(OutboxMessage.id))
        assert list(attempts) == [1, 1, 1]


def test_operators_list_and_requeue_dead_letters_from_the_cli(
    sqlite_url: str, sqlite_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    dead_id, _alive = write_rows(sqlite_factory, 2)
    with sqlite_factory() as session, session.begin():
        claim_pending_outbox(session)
        record_outbox_failure(
            session, dead_id, "discord_refused: 403 Missing Access", permanent=True
        )

    def hps(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HPS_DATA_DIR")}
        env.update(DATABASE_URL=sqlite_url, HPS_DATA_DIR=str(tmp_path), PYTHONPATH=str(ROOT))
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "outbox", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    listed = hps("dead")
    assert listed.returncode == 0, listed.stderr
    [shown] = json.loads(listed.stdout)
    assert (shown["id"], shown["reason"]) == (dead_id, "discord_refused: 403 Missing Access")
    retried = hps("retry", str(dead_id))
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["dead_at"] is None
    assert json.loads(hps("dead").stdout) == []
    again = hps("retry", str(dead_id))
    assert again.returncode == 2 and f"outbox row {dead_id} is not a dead letter" in again.stderr
