"""``bench.arena`` runs end to end at a tiny size: the JSON is the result, the naive baseline
reaches the product's fit, the ratios are the timings' ratios, bad arguments are refused."""

from __future__ import annotations

import json

import pytest

from bench import arena


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
