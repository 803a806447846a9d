"""``bench.guilds`` runs end to end at a small size on PostgreSQL (its own database, next to
the test database), makes one statement per percentile, agrees with its exact baselines,
reports the indexes its plans use and, with a small ``--sample-min``, takes the product's
sampled path for its biggest guild and measures that estimate's error."""

from __future__ import annotations

import json
import os

import psycopg
import pytest
from sqlalchemy.engine import make_url

import db.scores
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
    threshold = db.scores.SAMPLED_PERCENTILE_MIN
    # At this size the biggest guild's sample 0 holds ~60 consented scores, the others < 20:
    # a threshold of 30 samples the biggest only.
    result = guilds.main(
        ["--url", url, "--choices", "2000", "--guilds", "5", "--calls", "20",
         "--sample-min", "30", "--json"]
    )  # fmt: skip
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"] == result["data"]
    assert threshold == db.scores.SAMPLED_PERCENTILE_MIN  # restored after the run
    assert result["sampled_percentile_min"] == 30

    data = result["data"]
    assert data["choices"] == 2000 and data["generations"] == 500 and data["guilds"] == 5
    assert data["images"] == 2000 and data["scores"] > data["images"]  # + guild versions
    # sample = image_id % 16 (the loader checks every row): about 1/16 of the scores.
    assert 0 < data["sample0_scores"] < data["scores"] / 8

    rows = {row["name"]: row for row in result["percentile"]}
    for label in ("biggest", "median", "smallest"):
        for name in ("percentiles()", "join baseline"):
            row = rows[f"{name}, {label} guild"]
            assert row["statements_per_call"] == [1], row["name"]  # one round trip
            assert row["median_ms"] > 0 and row["plan"], row["name"]
            assert not row["sampled"] or (name, label) == ("percentiles()", "biggest")
        # The denormalised column's range scan, as the product runs it.
        assert (
            "Index Only Scan ix_scores_version_guild_score"
            in (rows[f"percentiles(), {label} guild"]["indexes"])
        )
    biggest = rows["percentiles(), biggest guild"]
    assert biggest["sampled"] and biggest["sample"] >= 30
    plan = "\n".join(biggest["plan"])
    # Sample 0's index range is counted; the exact scan sits behind a one-time filter, skipped.
    assert "sample = '0'::smallint" in plan and "One-Time Filter" in plan
    assert "(never executed)" in plan
    for label in ("median", "smallest"):
        exact = rows[f"percentiles(), {label} guild"]
        assert not exact["sampled"] and exact["sample"] < 30
        assert "(never executed)" not in "\n".join(exact["plan"])
    assert result["sweep"]["percentiles()"]["guilds"] == 5

    # The sampled guild's estimate against the exact count: one row, an error within a few
    # standard errors of a ~60-score sample.
    (accuracy,) = result["accuracy"]
    assert accuracy["guild_rank"] == 1 and accuracy["sample"] == biggest["sample"]
    assert len(accuracy["estimated"]) == len(accuracy["exact"]) == len(guilds.ACCURACY_VALUES)
    assert accuracy["exact"] != accuracy["estimated"]
    assert 0 < accuracy["max_abs_error"] < 5 * accuracy["standard_error_at_median"]
    assert result["accuracy_max_abs_error"] == accuracy["max_abs_error"]

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
