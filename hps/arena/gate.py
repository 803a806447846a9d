"""The human gate: a LoRA candidate is promoted only when it beats the active model in the
arena — a head-to-head win rate (ties half) over at least ``min_votes`` votes whose interval's
low end is above ``threshold`` (0.5).

The interval is :func:`hps.arena.ratings.win_rate_interval` (Wilson, conservative with ties).
Both-bad votes count as ties by default, as in the ratings (see :mod:`hps.arena.ratings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hps.arena.ratings import BothBad, HeadToHead, WinRate, win_rate_interval


@dataclass(frozen=True)
class GatePolicy:
    """A guild's gate: the votes needed, the interval's level, the bar its low end must clear."""

    min_votes: int = 30
    level: float = 0.95
    threshold: float = 0.5
    both_bad: BothBad = "tie"

    def __post_init__(self) -> None:
        if self.min_votes < 1:
            raise ValueError(f"min_votes must be at least 1, not {self.min_votes}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be between 0 and 1, not {self.level}")
        if not 0 <= self.threshold < 1:
            raise ValueError(f"threshold must be in [0, 1), not {self.threshold}")
        if self.both_bad not in ("tie", "ignore"):
            raise ValueError(f"both_bad must be 'tie' or 'ignore', not {self.both_bad!r}")


@dataclass(frozen=True)
class GateDecision:
    """Whether the candidate passed, on how many votes, its win rate and interval, and why."""

    passed: bool
    votes: int
    win_rate: float
    interval: tuple[float, float]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (posted with the promotion, stored with it)."""
        return {
            "passed": self.passed,
            "votes": self.votes,
            "win_rate": round(self.win_rate, 4),
            "interval": [round(self.interval[0], 4), round(self.interval[1], 4)],
            "reason": self.reason,
        }


def gate_decision(record: HeadToHead, policy: GatePolicy | None = None) -> GateDecision:
    """Decide the gate from the candidate's record against the active model (``record.first``
    is the candidate). The reason is a sentence a channel can read."""
    policy = policy or GatePolicy()
    wins, ties, losses = record.scored(policy.both_bad)
    rate = win_rate_interval(wins, ties, losses, policy.level)
    passed = rate.votes >= policy.min_votes and rate.low > policy.threshold
    return GateDecision(passed, rate.votes, rate.rate, (rate.low, rate.high),
                        _reason(record, rate, policy, passed))  # fmt: skip


def _reason(record: HeadToHead, rate: WinRate, policy: GatePolicy, passed: bool) -> str:
    numbers = f"win rate {rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}]"
    against = f"{record.first} against {record.second}"
    tally = f"{record.wins} wins, {record.ties} ties, {record.losses} losses"
    if record.both_bad:
        both = "ties" if policy.both_bad == "tie" else "not counted"
        tally += f", {record.both_bad} both bad ({both})"
    if rate.votes < policy.min_votes:
        return f"{against}: needs {policy.min_votes} votes, has {rate.votes} ({tally})."
    verdict = "is above" if passed else "reaches"
    return (
        f"{against}, {rate.votes} votes ({tally}): {numbers}: the interval {verdict} "
        f"{policy.threshold:g}."
    )
