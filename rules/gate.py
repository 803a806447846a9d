"""The arena's human gate, as arithmetic: a LoRA candidate passes when its head-to-head win
rate against the configuration it would replace (ties half) has, over at least ``min_votes``
votes, a Wilson interval whose low end is above ``threshold``.

Both-bad votes (neither picture was good) count as ties by default, or are left out
(``both_bad="ignore"``). ``hps.arena.gate`` decides from a rated head-to-head record, and
``db.arena_gate`` from the votes of a gate run inside its transaction: both with
:func:`decide`, so the promotion a channel sees and the one the database makes agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rules.win_rate import WinRate, win_rate_interval

BothBad = Literal["tie", "ignore"]


@dataclass(frozen=True)
class GatePolicy:
    """A guild's gate: the votes needed, the interval's level, the bar its low end must clear,
    and how both-bad votes count."""

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
class GateRecord:
    """The candidate's votes against the compared configuration, from the candidate's side:
    its wins, ties and losses, and the both-bad votes apart."""

    candidate: str
    compared: str
    wins: int
    ties: int
    losses: int
    both_bad: int = 0

    def scored(self, both_bad: BothBad = "tie") -> tuple[int, int, int]:
        """(wins, ties, losses) with both-bad votes as ties, or left out."""
        extra = self.both_bad if both_bad == "tie" else 0
        return self.wins, self.ties + extra, self.losses


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


def decide(record: GateRecord, policy: GatePolicy | None = None) -> GateDecision:
    """Decide the gate on ``record`` under ``policy`` (default :class:`GatePolicy`). The
    reason is a sentence a channel can read."""
    policy = policy or GatePolicy()
    rate = win_rate_interval(*record.scored(policy.both_bad), policy.level)
    passed = rate.votes >= policy.min_votes and rate.low > policy.threshold
    return GateDecision(passed, rate.votes, rate.rate, (rate.low, rate.high),
                        _reason(record, rate, policy, passed))  # fmt: skip


def _reason(record: GateRecord, rate: WinRate, policy: GatePolicy, passed: bool) -> str:
    numbers = f"win rate {rate.rate:.2f} [{rate.low:.2f}, {rate.high:.2f}]"
    against = f"{record.candidate} against {record.compared}"
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
