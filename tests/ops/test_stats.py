"""Statistics of the harvested data: numbers computed by hand on a small community, consent
applied, charts that are real PNGs, ``hps stats`` and the stats job through a real worker."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.ingest import ChoiceIn, GenerationIn, record_choice, record_generation
from db.models import ChoiceMethod, JobStatus, ModelKind
from db.privacy import opt_out
from db.registry import promote_model_version, register_model_version
from db.scope import Scope
from db.scores import store_scores
from db.stats import (
    AgreementBucket,
    DailyCount,
    agreement,
    choices_per_day,
    collect_stats,
    images_per_generator,
    score_distributions,
    top_prompts,
    totals,
)
from tests.factories import next_message_id, stored_images

ROOT = Path(__file__).resolve().parents[2]
D1 = datetime(2024, 3, 4, 9, 0, tzinfo=UTC)  # a Monday
D2 = datetime(2024, 3, 5, 23, 30, tzinfo=UTC)  # Tuesday, late: still the 5th in UTC
D3 = datetime(2024, 3, 12, 8, 0, tzinfo=UTC)  # Tuesday of the next week
HERE = Scope.guild(7)  # the guild of the test data


@dataclass
class Community:
    images: dict[str, list[int]]  # generation name -> image ids in position order


def _generation(
    session: Session, prompt: str, generator: str, at: datetime, n: int, requester: int | None
) -> list[int]:
    recorded = record_generation(
        session,
        GenerationIn(
            source_message_id=next_message_id(),
            channel_id=99,
            guild_id=7,
            prompt=prompt,
            generator=generator,
            images=stored_images(None, list(range(n))),
            requester_id=requester,
            created_at=at,
        ),
    )
    return recorded.image_ids


def _pick(
    session: Session, generation_image_ids: list[int], user: int, position: int | None, at: Any
) -> None:
    from db.models import Image

    generation_id = session.get(Image, generation_image_ids[0]).generation_id  # type: ignore[union-attr]
    record_choice(
        session,
        ChoiceIn(user, position, ChoiceMethod.button, generation_id, at=at + timedelta(hours=1)),
    )


def build_community(factory: sessionmaker[Session]) -> Community:
    """Requesters 10 (consents) and 11 (opts out later); choosers 100-102, and 103 who opts
    out after choosing. See the module tests for the numbers this must give."""
    images: dict[str, list[int]] = {}
    with factory() as session, session.begin():
        images["g1"] = _generation(session, "a red fox", "bot-a", D1, 4, 10)
        for user, position in ((100, 0), (101, 0), (102, 1), (103, 0)):
            _pick(session, images["g1"], user, position, D1)
        images["g2"] = _generation(session, "a grey cat", "bot-a", D1, 4, 10)
        for user, position in ((100, 2), (101, 3)):
            _pick(session, images["g2"], user, position, D1)
        images["g3"] = _generation(session, "a  red FOX", "bot-b", D2, 2, 10)  # same prompt
        for user in (100, 101, 102):
            _pick(session, images["g3"], user, 1, D2)
        images["g4"] = _generation(session, "an owl", "bot-b", D3, 4, 11)
        for user in (100, 101):
            _pick(session, images["g4"], user, 0, D3)
        images["g5"] = _generation(session, "the sky", "bot-a", D3, 4, None)
        _pick(session, images["g5"], 100, 0, D3)
        _pick(session, images["g5"], 101, None, D3)  # a skip: not a choice
        opt_out(session, 103)
        opt_out(session, 11)
    return Community(images)


def test_hand_computed_numbers(factory: sessionmaker[Session]) -> None:
    build_community(factory)
    with factory() as session:
        # Picks are dated by their own time, one hour after their generation: g3's at 00:30
        # on the 6th. g1: 100, 101, 102 (103 opted out) + g2: 2; g5: 100 (101 skipped); g4's
        # requester opted out.
        assert choices_per_day(session, HERE) == [
            DailyCount(date(2024, 3, 4), 5),
            DailyCount(date(2024, 3, 6), 3),
            DailyCount(date(2024, 3, 12), 1),
        ]
        # g1: 3 visible choosers, pairs (100,101) agree of 3, chance 3 x 1/4
        # g2: 1 pair, disagree, chance 1/4; g3: 3 pairs all agree, chance 3 x 1/2
        # g4 is excluded (requester opted out); g5 has one chooser.
        per_day = agreement(session, HERE, period="day")
        assert per_day == [
            AgreementBucket(date(2024, 3, 4), 2, 4, 1, 1.0),
            AgreementBucket(date(2024, 3, 5), 1, 3, 3, 1.5),
        ]
        assert per_day[0].agreement == 0.25 and per_day[0].chance == 0.25
        assert per_day[1].agreement == 1.0 and per_day[1].chance == 0.5
        [week] = agreement(session, HERE, period="week")
        assert week == AgreementBucket(date(2024, 3, 4), 3, 7, 4, 2.5)
        [overall] = agreement(session, HERE)
        assert overall.start is None and overall.pairs == 7 and overall.agreeing_pairs == 4
        assert overall.agreement == pytest.approx(4 / 7) and overall.chance == pytest.approx(
            2.5 / 7
        )
        generators = images_per_generator(session, HERE)
        assert [(g.generator, g.generations, g.images) for g in generators] == [
            ("bot-a", 3, 12),
            ("bot-b", 1, 2),
        ]
        prompts = top_prompts(session, HERE, limit=5)
        assert [(p.text, p.choices, p.generations) for p in prompts] == [
            ("a red fox", 6, 2),
            ("a grey cat", 2, 1),
            ("the sky", 1, 1),
        ]
        assert totals(session, HERE) == type(totals(session, HERE))(
            prompts=3, generations=4, images=14, choices=9, choosers=3
        )
        since = choices_per_day(session, HERE, since=datetime(2024, 3, 5, tzinfo=UTC))
        assert [row.day for row in since] == [date(2024, 3, 6), date(2024, 3, 12)]


def test_choices_per_day_is_utc(pg_factory: sessionmaker[Session]) -> None:
    with pg_factory() as session, session.begin():
        ids = _generation(session, "late", "bot-a", D2, 2, 10)
        _pick(session, ids, 100, 0, datetime(2024, 3, 5, 22, 30, tzinfo=UTC))  # 23:30 UTC
        session.execute(text("SET LOCAL TIME ZONE 'Asia/Tokyo'"))
        assert choices_per_day(session, HERE) == [DailyCount(date(2024, 3, 5), 1)]


def _scores(factory: sessionmaker[Session], community: Community) -> tuple[int, int]:
    with factory() as session, session.begin():
        active = register_model_version(
            session, kind=ModelKind.hps, name="hps-a", checkpoint_key="a", architecture="tiny"
        ).id
        promote_model_version(session, active)
        candidate = register_model_version(
            session, kind=ModelKind.hps, name="hps-b", checkpoint_key="b", architecture="tiny"
        ).id
        g1, g2, g4 = (community.images[name] for name in ("g1", "g2", "g4"))
        store_scores(session, active, dict(zip(g1, [10.0, 20.0, 30.0, 40.0], strict=True)))
        store_scores(session, active, dict.fromkeys(g4, 100.0))  # requester opted out
        store_scores(session, candidate, dict.fromkeys(g2, 5.0))
    return active, candidate


def test_score_distributions(factory: sessionmaker[Session]) -> None:
    community = build_community(factory)
    active, candidate = _scores(factory, community)
    with factory() as session:
        first, second = score_distributions(session, HERE, bins=3)
    assert first.model_version_id == active and first.status == "active"
    assert (first.count, first.mean, first.minimum, first.maximum) == (4, 25.0, 10.0, 40.0)
    assert first.edges == pytest.approx([10.0, 20.0, 30.0, 40.0])
    assert first.counts == [1, 1, 2]  # 40 (the maximum) falls in the last, closed bin
    assert second.model_version_id == candidate and second.status == "candidate"
    assert (second.count, second.edges, second.counts) == (4, [5.0, 5.0], [4])


def test_opted_out_users_leave_no_trace(pg_factory: sessionmaker[Session]) -> None:
    build_community(pg_factory)
    with pg_factory() as session, session.begin():
        before = collect_stats(session, HERE)
        opt_out(session, 100)
    with pg_factory() as session:
        after = collect_stats(session, HERE)
    assert before.totals.choices == 9 and before.totals.choosers == 3
    # 100 made 4 of the visible picks (g1, g2, g3, g5)
    assert after.totals.choices == 5 and after.totals.choosers == 2
    assert after.totals.generations == 4  # 100 chose, but requested nothing
    dumped = json.dumps(after.to_dict())
    assert "an owl" not in dumped  # the prompt of the requester who opted out


def test_charts_are_pngs_and_summary_is_short(pg_factory: sessionmaker[Session]) -> None:
    from worker.stats_charts import render_charts, summary_text

    community = build_community(pg_factory)
    _scores(pg_factory, community)
    with pg_factory() as session, session.begin():
        ids = _generation(session, "$x$ costs $5 \U0001f98a", "bot-$", D3, 2, 10)
        _pick(session, ids, 102, 1, D3)
    with pg_factory() as session:
        report = collect_stats(session, HERE, bins=5)
    charts = render_charts(report)
    assert [chart.filename for chart in charts] == [
        "choices_per_day.png",
        "images_per_generator.png",
        "score_distribution.png",
        "agreement.png",
        "top_prompts.png",
    ]
    for chart in charts:
        image = PILImage.open(io.BytesIO(chart.png))
        image.verify()
        assert image.format == "PNG" and image.size[0] > 300
    text = summary_text(report)
    assert len(text) < 1800
    assert "10 choices by 3 users" in text
    assert "57.1% of 7 chooser pairs" in text and "chance 35.7%" in text


def test_the_summary_quotes_prompts_without_pings_or_markdown(
    pg_factory: sessionmaker[Session],
) -> None:
    from sandbox.discord_rules import pings_of
    from worker.stats_charts import summary_text

    hostile = "@everyone <@&123456789012345678> <@876543210987654321> **loud**"
    with pg_factory() as session, session.begin():
        ids = _generation(session, hostile, "bot", D3, 2, 10)
        _pick(session, ids, 102, 1, D3)
    with pg_factory() as session:
        text = summary_text(collect_stats(session, HERE, bins=5))
    assert "Most chosen prompt" in text and "\\*\\*loud\\*\\*" in text
    assert not pings_of(text, None).anyone


def test_empty_database(pg_factory: sessionmaker[Session]) -> None:
    from worker.stats_charts import render_charts, summary_text

    with pg_factory() as session:
        report = collect_stats(session, HERE)
    assert render_charts(report) == []
    assert "no generation has two choosers yet" in summary_text(report)
    assert report.agreement is not None and report.agreement.agreement is None
    json.dumps(report.to_dict())


# --- the command line ---


def hps(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "DISCORD_TOKEN")
    }
    environment.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_writes_charts_and_prints_summary(
    pg_url: str, pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    build_community(pg_factory)
    out = tmp_path / "charts"
    result = hps("stats", "--out", str(out), "--days", "0", "--guild", "7", DATABASE_URL=pg_url)
    assert result.returncode == 0, result.stderr
    assert "9 choices by 3 users on 4 generations" in result.stdout
    assert "**" not in result.stdout
    pngs = sorted(path.name for path in out.glob("*.png"))
    assert "choices_per_day.png" in pngs and "agreement.png" in pngs
    for name in pngs:
        PILImage.open(out / name).verify()
    document = json.loads((out / "stats.json").read_text())
    # top level: table row counts (as hps stats always printed); totals: consent applied
    assert document["generations"] == 5 and document["totals"]["generations"] == 4
    assert document["totals"]["choices"] == 9
    plain = hps("stats", "--days", "0", "--guild", "7", DATABASE_URL=pg_url)
    assert plain.returncode == 0, plain.stderr
    counted = json.loads(plain.stdout)
    assert counted["agreement"]["agreeing_pairs"] == 4
    assert counted["choices_per_day"][0] == {"day": "2024-03-04", "choices": 5}
    # Without --guild: the guilds that pool their data, and guild 7 keeps its data private.
    pooled = json.loads(hps("stats", "--days", "0", DATABASE_URL=pg_url).stdout)
    assert pooled["totals"]["choices"] == 0 and pooled["generations"] == 5


def test_cli_on_embedded_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert hps("db", "upgrade", HPS_DATA_DIR=str(data)).returncode == 0
    result = hps("stats", HPS_DATA_DIR=str(data))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["generations"] == 0 and document["totals"]["choices"] == 0
    bad = hps("stats", "--top", "0", HPS_DATA_DIR=str(data))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


# --- the stats job through a real worker ---


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.worker.harness import models_data_dir

    return models_data_dir(tmp_path_factory, "stats-worker")


@pytest.fixture(scope="module")
def worker(pg_url: str, data_dir: Path) -> Iterator[Any]:
    from tests.worker.harness import running_worker, worker_env

    with running_worker(worker_env(pg_url, data_dir), data_dir / "worker.log") as process:
        yield process


def test_stats_job_end_to_end(
    worker: Any, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    from jobqueue.app import make_celery
    from jobqueue.contracts import StatsParams
    from jobqueue.submit import JobOrigin, submit_job
    from media.store import LocalImageStore
    from tests.worker.harness import BROKER_URL, outbox_rows, submit_unchecked, wait_for_job

    build_community(pg_factory)
    client = make_celery(load_settings(broker_url=BROKER_URL, hps_data_dir=data_dir))
    job_id = submit_job(
        client,
        pg_factory,
        StatsParams(days=0),
        JobOrigin(requested_by=77, channel_id=5, guild_id=7),
    )
    job = wait_for_job(pg_factory, job_id, timeout=120)
    assert job.status == JobStatus.succeeded, job.error
    [row] = outbox_rows(pg_factory, job_id)
    assert row.kind == "stats_result" and row.channel_id == 5
    payload = row.payload
    assert "9 choices by 3 users" in payload["text"]
    assert 1 <= len(payload["files"]) <= 10
    store = LocalImageStore(data_dir / "images")
    for entry in payload["files"]:
        assert set(entry) == {"sha256", "filename"} and entry["filename"].endswith(".png")
        PILImage.open(io.BytesIO(store.get(entry["sha256"]))).verify()
    assert job.result is not None and job.result["stats"]["totals"]["choices"] == 9

    bad = submit_unchecked(client, pg_factory, "stats", {"days": "lots"}, channel_id=5)
    failed = wait_for_job(pg_factory, bad, timeout=120)
    assert failed.status == JobStatus.failed and "days must be a whole number" in (
        failed.error or ""
    )
