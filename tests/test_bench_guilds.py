"""``bench.guilds`` runs end to end at a small size on PostgreSQL (its own database, next to
the test database), makes one statement per percentile, agrees with its baselines and
reports the indexes its plans use."""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from sqlalchemy.engine import make_url

from bench import guilds

TEST_DATABASE_URL = os.environ.get(
    "HPS_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/hps_test"
)


def bench_url() -> str:
    """The test server, a database of the bench's own (dropped by the bench)."""
    parsed = make_url(TEST_DATABASE_URL)
    name = f"{parsed.database}_bench_guilds"
    return parsed.set(database=name).render_as_string(hide_password=False)


def test_bench_guilds_small(capsys: pytest.CaptureFixture[str]) -> None:
    url = bench_url()
    result = guilds.main(
        ["--url", url, "--choices", "2000", "--guilds", "5", "--calls", "20", "--json"]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"] == result["data"]

    data = result["data"]
    assert data["choices"] == 2000 and data["generations"] == 500 and data["guilds"] == 5
    assert data["images"] == 2000 and data["scores"] > data["images"]  # + guild versions

    rows = {row["name"]: row for row in result["percentile"]}
    for label in ("biggest", "median", "smallest"):
        for name in ("percentiles()", "join baseline", "proposal: one scan"):
            row = rows[f"{name}, {label} guild"]
            assert row["statements_per_call"] == [1], row["name"]  # one round trip
            assert row["median_ms"] > 0 and row["plan"], row["name"]
        # The denormalised column's range scan, as the product runs it.
        assert (
            "Index Only Scan ix_scores_version_guild_score"
            in (rows[f"percentiles(), {label} guild"]["indexes"])
        )
    assert result["sweep"]["percentiles()"]["guilds"] == 5

    snapshots = {row["name"]: row for row in result["snapshot"]}
    pooled = snapshots["snapshot, whole pooled set"]
    per_guild = [row for name, row in snapshots.items() if name != pooled["name"]]
    assert all(0 < row["rows"] < pooled["rows"] for row in per_guild)
    assert all(row["plan"] and row["indexes_ssd"] for row in per_guild)

    # The bench cleaned up after itself.
    admin = make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False)) as connection:
        left = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (make_url(url).database,)
        ).fetchone()
    assert left is None
