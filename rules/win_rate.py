"""A head-to-head win rate (ties count half) and its Wilson score interval."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class WinRate:
    """A head-to-head win rate (ties count half) and its interval."""

    rate: float
    low: float
    high: float
    votes: int


def win_rate_interval(wins: int, ties: int, losses: int, level: float = 0.95) -> WinRate:
    """Win rate ``(wins + ties / 2) / votes`` with a Wilson score interval at ``level``.

    Wilson's interval is for a binomial proportion; a vote's score here is 1, ½ or 0, whose
    variance ``p(1 − p) − ties / (4 n)`` is at most the binomial one, so with ties the
    interval is conservative (wider than needed) — the safe side for a promotion gate.
    No votes: rate 0.5 with the interval [0, 1].
    """
    if min(wins, ties, losses) < 0:
        raise ValueError(f"counts must not be negative: {wins}, {ties}, {losses}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level}")
    n = wins + ties + losses
    if n == 0:
        return WinRate(0.5, 0.0, 1.0, 0)
    p = (wins + ties / 2) / n
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return WinRate(p, max(0.0, centre - spread), min(1.0, centre + spread), n)
