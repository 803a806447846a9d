"""rules.win_rate and rules.gate: the Wilson interval's numbers, the gate's decision and its
sentence, and that hps's gate is this rule (db.arena_gate's is held to it in tests/db)."""

from __future__ import annotations

import pytest

from rules.gate import GateDecision, GatePolicy, GateRecord, decide
from rules.win_rate import WinRate, win_rate_interval


def test_wilson_interval_numbers() -> None:
    # 8 of 10 at 95%: the textbook Wilson interval (0.4902, 0.9433).
    rate = win_rate_interval(8, 0, 2)
    assert rate.rate == 0.8 and rate.votes == 10
    assert (round(rate.low, 4), round(rate.high, 4)) == (0.4902, 0.9433)
    assert win_rate_interval(6, 4, 0).rate == 0.8  # a tie counts half
    assert win_rate_interval(0, 0, 0) == WinRate(0.5, 0.0, 1.0, 0)
    wide, narrow = win_rate_interval(6, 0, 4, 0.99), win_rate_interval(6, 0, 4, 0.8)
    assert wide.low < narrow.low < 0.6 < narrow.high < wide.high


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: win_rate_interval(-1, 0, 0), "must not be negative"),
        (lambda: win_rate_interval(1, 0, 0, 1.0), "level must be between 0 and 1"),
        (lambda: GatePolicy(min_votes=0), "min_votes must be at least 1"),
        (lambda: GatePolicy(threshold=1.0), r"threshold must be in \[0, 1\)"),
        (lambda: GatePolicy(both_bad="drop"), "both_bad must be 'tie' or 'ignore'"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_refused(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


def test_the_decision_and_its_sentence() -> None:
    record = GateRecord("lora-v2", "active", 24, 0, 8, both_bad=10)
    as_ties = decide(record, GatePolicy(min_votes=30))
    assert as_ties == GateDecision(
        True, 42, 29 / 42, as_ties.interval,
        "lora-v2 against active, 42 votes (24 wins, 0 ties, 8 losses, 10 both bad (ties)): "
        f"win rate 0.69 [{as_ties.interval[0]:.2f}, {as_ties.interval[1]:.2f}]: "
        "the interval is above 0.5.",
    )  # fmt: skip
    assert as_ties.interval == (win_rate_interval(24, 10, 8).low, win_rate_interval(24, 10, 8).high)
    ignored = decide(record, GatePolicy(min_votes=33, both_bad="ignore"))
    assert not ignored.passed and ignored.votes == 32
    assert ignored.reason == (
        "lora-v2 against active: needs 33 votes, has 32 "
        "(24 wins, 0 ties, 8 losses, 10 both bad (not counted))."
    )
    assert decide(GateRecord("a", "b", 19, 0, 12)).reason.endswith("the interval reaches 0.5.")
    assert decide(record).to_dict() == {
        "passed": True,
        "votes": 42,
        "win_rate": round(29 / 42, 4),
        "interval": [round(as_ties.interval[0], 4), round(as_ties.interval[1], 4)],
        "reason": as_ties.reason,
    }


def test_hps_gate_is_this_rule() -> None:
    from hps.arena import gate, ratings

    assert gate.GatePolicy is GatePolicy and gate.GateDecision is GateDecision
    assert ratings.win_rate_interval is win_rate_interval
    head_to_head = ratings.HeadToHead("new", "old", 30, 4, 9, 3)
    policy = GatePolicy(min_votes=20, threshold=0.55)
    assert gate.gate_decision(head_to_head, policy) == decide(
        GateRecord("new", "old", 30, 4, 9, 3), policy
    )
