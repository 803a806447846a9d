"""``bench.arena`` runs end to end at a tiny size: the JSON is the result, the naive baseline
reaches the product's fit, the ratios are the timings' ratios, bad arguments are refused."""

from __future__ import annotations

import json

import pytest

from bench import arena, arena_posting


def test_bench_arena_small(capsys: pytest.CaptureFixture[str]) -> None:
    result = arena.main(
        ["--votes", "4000", "--models", "5", "--rounds", "20", "--repeats", "1",
         "--baseline-votes", "2000", "--json"]
    )  # fmt: skip
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert (result["votes"], result["models"], result["rounds"]) == (4000, 5, 20)
    assert result["fit_converged"] and result["naive_reached_tolerance"]
    assert result["naive_final_error_elo"] < 1.0 and result["naive_steps"] >= 1
    assert result["ratio_subsample"] == pytest.approx(
        result["naive_subsample_s"] / result["product_subsample_fit_s"]
    )
    assert result["naive_extrapolated_full_s"] == pytest.approx(2 * result["naive_subsample_s"])
    assert result["max_error_vs_truth_elo"] < 100  # 4000 votes recover the strengths roughly
    low, high = result["nu_interval"]
    assert low < result["nu"] < high
    arena.print_table(result)
    table = capsys.readouterr().out
    assert "product fit (Newton on pair counts)" in table and "naive per-vote" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "1"], "--models must be at least 2"),
        (["--votes", "0"], "--votes must be at least 1"),
        (["--rounds", "-1"], "--rounds must be 0 or more"),
    ],
)
def test_bad_arguments_are_refused(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        arena.parse_args(argv)
    assert message in capsys.readouterr().err


def test_bench_arena_posting_small(capsys: pytest.CaptureFixture[str]) -> None:
    """Duel posting and voting on the emulator at a tiny size, in a database of its own
    (re-created): every duel posted and opened, every generation recorded, every vote and
    pick counted (the bench checks the rows and fails otherwise); the table prints."""
    from sqlalchemy.engine import make_url

    from tests.conftest import TEST_DATABASE_URL

    url = make_url(TEST_DATABASE_URL)
    own = url.set(database=f"{url.database}_arena_posting").render_as_string(hide_password=False)
    result = arena_posting.main(
        ["--duels", "3", "--voters", "2", "--repeats", "2", "--size", "64", "--url", own, "--json"]
    )
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(result))
    assert (result["duels"], result["voters"], result["repeats"]) == (3, 2, 2)
    assert (result["duels_units"], result["votes_units"], result["picks_units"]) == (3, 6, 6)
    for key in ("duels", "generations", "votes", "picks"):
        assert len(result[f"{key}_rates"]) == 2 and result[f"{key}_per_s"] > 0
    assert result["vote_to_pick"] == pytest.approx(result["votes_per_s"] / result["picks_per_s"])
    arena_posting.print_table(result)
    table = capsys.readouterr().out
    assert "duels posted + opened" in table and "baseline: picks" in table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duels", "0"], "--duels must be at least 1"),
        (["--size", "4"], "--size must be at least 8"),
    ],
)
def test_bench_arena_posting_refuses_bad_arguments(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        arena_posting.parse_args(argv)
    assert message in capsys.readouterr().err
