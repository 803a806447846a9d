"""The human gate: passes a clear winner, refuses an unclear one and one with too few votes,
with readable reasons; its policy is configurable and checked."""

from __future__ import annotations

import pytest

from hps.arena.gate import GatePolicy, gate_decision
from hps.arena.ratings import HeadToHead, head_to_head, votes_from_pairs


def record(wins: int, ties: int, losses: int, both_bad: int = 0) -> HeadToHead:
    return HeadToHead("lora-v2", "active", wins, ties, losses, both_bad)


def test_a_clear_winner_passes() -> None:
    decision = gate_decision(record(40, 5, 10))
    assert decision.passed and decision.votes == 55
    assert decision.win_rate == pytest.approx(42.5 / 55)
    assert 0.5 < decision.interval[0] < decision.win_rate < decision.interval[1]
    assert "the interval is above 0.5" in decision.reason
    assert decision.reason.startswith(
        "lora-v2 against active, 55 votes (40 wins, 5 ties, 10 losses): win rate 0.77 ["
    )


def test_an_unclear_winner_is_refused_because_the_interval_reaches_half() -> None:
    decision = gate_decision(record(19, 0, 12))
    assert not decision.passed
    assert decision.interval[0] <= 0.5 < decision.win_rate
    low, high = decision.interval
    assert f"win rate 0.61 [{low:.2f}, {high:.2f}]: the interval reaches 0.5" in decision.reason


def test_too_few_votes_are_refused_even_when_all_are_wins() -> None:
    decision = gate_decision(record(12, 0, 0))
    assert not decision.passed and decision.interval[0] > 0.5
    assert "needs 30 votes, has 12" in decision.reason
    assert gate_decision(record(12, 0, 0), GatePolicy(min_votes=10)).passed


def test_a_loser_is_refused() -> None:
    decision = gate_decision(record(10, 0, 40))
    assert not decision.passed and decision.interval[1] < 0.5


def test_both_bad_votes_count_as_ties_unless_ignored() -> None:
    # 24 wins, 8 losses, 10 both bad: as ties the rate drops and the votes grow.
    as_ties = gate_decision(record(24, 0, 8, both_bad=10))
    ignored = gate_decision(record(24, 0, 8, both_bad=10), GatePolicy(both_bad="ignore"))
    assert (as_ties.votes, ignored.votes) == (42, 32)
    assert as_ties.win_rate == pytest.approx(29 / 42) and ignored.win_rate == 0.75
    assert "10 both bad (ties)" in as_ties.reason
    assert "10 both bad (not counted)" in ignored.reason


def test_stricter_policy_level_and_threshold() -> None:
    votes = record(22, 0, 10)
    assert gate_decision(votes).passed
    assert not gate_decision(votes, GatePolicy(level=0.999)).passed
    assert not gate_decision(votes, GatePolicy(threshold=0.55)).passed


def test_gate_from_votes_and_json() -> None:
    rows = [("cand", "active", "a")] * 30 + [("active", "cand", "a")] * 5
    decision = gate_decision(head_to_head(votes_from_pairs(rows), "cand", "active"))
    assert decision.passed and decision.votes == 35
    data = decision.to_dict()
    assert data["passed"] is True and data["votes"] == 35 and len(data["interval"]) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_votes": 0}, "min_votes must be at least 1"),
        ({"level": 1.0}, "level must be between 0 and 1"),
        ({"threshold": 1.0}, "threshold must be in"),
        ({"both_bad": "skip"}, "both_bad must be 'tie' or 'ignore'"),
    ],
)
def test_bad_policy_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GatePolicy(**kwargs)
