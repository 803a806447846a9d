"""Arena ratings: votes in a compact array form, Bradley–Terry ratings with ties and bootstrap
intervals, per-model tallies, head-to-head records and win-rate intervals.

Votes: ``model_a``, ``model_b`` (indices into ``names``) and ``outcome`` (1: A wins, 0: B wins,
0.5: tie), plus ``both_bad`` (the **both bad** button). A both-bad vote says neither picture
was good, not which was better: by default it counts as a tie, as Chatbot Arena counts its
"tie (bothbad)" votes (lm-sys/FastChat, ``fastchat/serve/monitor/elo_analysis.py``:
``compute_elo`` scores ``"tie"`` and ``"tie (bothbad)"`` alike as 0.5, and its pair statistics
count both as ties); ``both_bad="ignore"`` leaves them out of the ratings instead. Either way
the tallies report them separately.

Ratings are reported on an Elo-like scale: ``1000 + 400 / ln 10 × θ`` with ``θ`` the natural
log-strength of :mod:`hps.arena.bradley_terry` (400 points = strengths in ratio 10, as in Elo),
anchored so that the rated models' mean is 1000, or a named ``anchor`` model is exactly 1000.
Intervals are bootstrap percentile intervals: the votes are resampled with replacement (a
multinomial draw of the aggregated (pair, outcome) counts, which is the same distribution),
the model refitted, the anchored ratings' quantiles taken; the generator is seeded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hps.arena.bradley_terry import FloatArray, IntArray, Method, PairCounts, fit_counts

# The win rate and its Wilson interval are shared with db/ (the gate's decision): rules/.
from rules.win_rate import WinRate as WinRate
from rules.win_rate import win_rate_interval as win_rate_interval

BothBad = Literal["tie", "ignore"]
NDBool = NDArray[np.bool_]
ELO_PER_LOG_STRENGTH = 400 / math.log(10)
BASE_RATING = 1000.0
OUTCOME_WORDS = {"a": 1.0, "b": 0.0, "tie": 0.5}
BOOTSTRAP_CELLS_PER_CHUNK = 2_000_000  # bounds the memory of one batch of replicates


@dataclass(frozen=True)
class Votes:
    """Duel votes in array form: build with :meth:`create` (checks them) or
    :func:`votes_from_pairs`."""

    names: tuple[str, ...]
    model_a: IntArray
    model_b: IntArray
    outcome: FloatArray
    both_bad: NDBool = field(repr=False)

    @classmethod
    def create(
        cls,
        names: Sequence[str],
        model_a: Any,
        model_b: Any,
        outcome: Any,
        both_bad: Any = None,
    ) -> Votes:
        """Check and store the arrays; ``outcome`` of a both-bad vote is ignored (set 0.5)."""
        a, b = np.asarray(model_a, dtype=np.int64), np.asarray(model_b, dtype=np.int64)
        result = np.asarray(outcome, dtype=np.float64)
        bad = np.zeros(len(a), bool) if both_bad is None else np.asarray(both_bad, dtype=bool)
        _check_votes(tuple(names), a, b, result, bad)
        result = np.where(bad, 0.5, result)
        return cls(tuple(names), a, b, result, bad)

    def __len__(self) -> int:
        return len(self.model_a)


def _check_votes(
    names: tuple[str, ...], a: IntArray, b: IntArray, outcome: FloatArray, bad: NDBool
) -> None:
    if len(set(names)) != len(names):
        raise ValueError("model names must be distinct")
    lengths = {len(a), len(b), len(outcome), len(bad)}
    if len(lengths) != 1 or a.ndim != 1:
        raise ValueError(
            "model_a, model_b, outcome and both_bad must be 1-d arrays of one length, "
            f"got lengths {len(a)}, {len(b)}, {len(outcome)}, {len(bad)}"
        )
    for label, index in (("model_a", a), ("model_b", b)):
        if len(index) and (index.min() < 0 or index.max() >= len(names)):
            raise ValueError(f"{label} holds an index outside 0..{len(names) - 1}")
    same = np.flatnonzero(a == b)
    if len(same):
        raise ValueError(f"vote {same[0]} pits {names[a[same[0]]]!r} against itself")
    odd = np.flatnonzero(~bad & ~np.isin(outcome, (0.0, 0.5, 1.0)))
    if len(odd):
        raise ValueError(
            f"vote {odd[0]} has outcome {float(outcome[odd[0]])!r}: use 1 (A wins), 0 (B wins), "
            "0.5 (tie)"
        )


def votes_from_pairs(
    rows: Iterable[tuple[str, str, float | str]], names: Sequence[str] | None = None
) -> Votes:
    """Votes from ``(name_a, name_b, outcome)`` rows; ``outcome`` is 1, 0, 0.5 or one of
    ``"a"``, ``"b"``, ``"tie"``, ``"both_bad"``. ``names`` fixes the models (and their order);
    by default they are the names in order of first appearance."""
    rows = list(rows)
    order = list(names) if names is not None else []
    if names is None:
        for name_a, name_b, _ in rows:
            order.extend(n for n in (name_a, name_b) if n not in order)
    index = {name: i for i, name in enumerate(order)}
    a, b, outcome, bad = [], [], [], []
    for number, (name_a, name_b, result) in enumerate(rows):
        unknown = [n for n in (name_a, name_b) if n not in index]
        if unknown:
            raise ValueError(f"vote {number} names an unknown model {unknown[0]!r}")
        a.append(index[name_a])
        b.append(index[name_b])
        bad.append(result == "both_bad")
        outcome.append(0.5 if result == "both_bad" else _outcome_value(number, result))
    return Votes.create(order, a, b, outcome, bad)


def _outcome_value(number: int, result: float | str) -> float:
    if isinstance(result, str):
        if result not in OUTCOME_WORDS:
            raise ValueError(
                f"vote {number} has outcome {result!r}: use 1, 0, 0.5, 'a', 'b', 'tie' or "
                "'both_bad'"
            )
        return OUTCOME_WORDS[result]
    return float(result)


def aggregate(votes: Votes, both_bad: BothBad = "tie") -> PairCounts:
    """Per unordered pair (first index < second): wins, ties and losses of the first model.

    Both-bad votes are ties, or left out with ``both_bad="ignore"``."""
    if both_bad not in ("tie", "ignore"):
        raise ValueError(f"both_bad must be 'tie' or 'ignore', not {both_bad!r}")
    keep = ~votes.both_bad if both_bad == "ignore" else np.ones(len(votes), bool)
    a, b, outcome = votes.model_a[keep], votes.model_b[keep], votes.outcome[keep]
    k = len(votes.names)
    first, second = np.minimum(a, b), np.maximum(a, b)
    first_score = np.where(a < b, outcome, 1.0 - outcome)  # the outcome seen from `first`
    cell = first * k + second
    wins = np.bincount(cell[first_score == 1.0], minlength=k * k)
    ties = np.bincount(cell[first_score == 0.5], minlength=k * k)
    losses = np.bincount(cell[first_score == 0.0], minlength=k * k)
    present = np.flatnonzero(wins + ties + losses)
    return PairCounts(
        n_models=k,
        first=(present // k).astype(np.int64),
        second=(present % k).astype(np.int64),
        wins=wins[present][None, :].astype(np.float64),
        ties=ties[present][None, :].astype(np.float64),
        losses=losses[present][None, :].astype(np.float64),
    )


@dataclass(frozen=True)
class Tally:
    """One model's votes: wins, ties and losses (both-bad votes apart), as A or B."""

    votes: int
    wins: int
    ties: int
    losses: int
    both_bad: int


def tallies(votes: Votes) -> list[Tally]:
    """Every model's :class:`Tally`, in the order of ``votes.names``."""
    k = len(votes.names)
    rated = ~votes.both_bad

    def count(index: IntArray, mask: NDBool) -> IntArray:
        return np.bincount(index[mask], minlength=k)

    a, b, o = votes.model_a, votes.model_b, votes.outcome
    wins = count(a, rated & (o == 1.0)) + count(b, rated & (o == 0.0))
    losses = count(a, rated & (o == 0.0)) + count(b, rated & (o == 1.0))
    ties = count(a, rated & (o == 0.5)) + count(b, rated & (o == 0.5))
    bad = count(a, votes.both_bad) + count(b, votes.both_bad)
    total = count(a, np.ones(len(a), bool)) + count(b, np.ones(len(b), bool))
    return [
        Tally(int(total[i]), int(wins[i]), int(ties[i]), int(losses[i]), int(bad[i]))
        for i in range(k)
    ]


@dataclass(frozen=True)
class ModelRating:
    """One row of the leaderboard: the rating (Elo-like scale), its interval, its rank (1 is
    best) with the bootstrap's rank interval, the log-strength, and the model's tally."""

    name: str
    rank: int
    rating: float
    low: float
    high: float
    rank_low: int
    rank_high: int
    log_strength: float
    tally: Tally

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (``hps leaderboard`` prints these)."""
        return {
            "name": self.name,
            "rank": self.rank,
            "rating": round(self.rating, 2),
            "interval": [round(self.low, 2), round(self.high, 2)],
            "rank_interval": [self.rank_low, self.rank_high],
            "log_strength": round(self.log_strength, 6),
            **self.tally.__dict__,
        }


@dataclass(frozen=True)
class Leaderboard:
    """Rated models best first, the tie parameter ``ν`` with its interval, and how it was made.

    ``unrated`` names models with no rating evidence (no votes, or only ignored both-bad
    votes); ``connected`` is False when some rated models were never compared, directly or
    through others, with the rest (their ratings then rest on the prior's anchoring).
    """

    models: tuple[ModelRating, ...]
    unrated: tuple[str, ...]
    nu: float
    nu_interval: tuple[float, float]
    votes: int
    method: str
    both_bad: str
    rounds: int
    level: float
    seed: int
    anchor: str | None
    connected: bool
    converged: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the whole leaderboard."""
        return {
            "models": [m.to_dict() for m in self.models],
            "unrated": list(self.unrated),
            "tie_parameter": {"nu": self.nu, "interval": list(self.nu_interval)},
            "votes": self.votes,
            "method": self.method,
            "both_bad": self.both_bad,
            "bootstrap_rounds": self.rounds,
            "level": self.level,
            "seed": self.seed,
            "scale": f"{BASE_RATING:g} + 400/ln(10) x log-strength",
            "anchor": self.anchor or "mean",
            "connected": self.connected,
            "converged": self.converged,
        }


@dataclass(frozen=True)
class RatingOptions:
    """How :func:`leaderboard` fits: the model (``"davidson"`` or ``"half"``), the both-bad
    policy, the bootstrap (rounds, level, seed), the priors and the anchor."""

    method: Method = "davidson"
    both_bad: BothBad = "tie"
    rounds: int = 1000
    level: float = 0.95
    seed: int = 0
    prior_sd: float = 3.0
    tie_prior_sd: float = 3.0
    anchor: str | None = None

    def check(self, names: Sequence[str]) -> None:
        """Raise ``ValueError`` naming the first bad option."""
        if self.rounds < 0:
            raise ValueError(f"rounds must be 0 (no intervals) or more, not {self.rounds}")
        if not 0 < self.level < 1:
            raise ValueError(f"level must be between 0 and 1, not {self.level}")
        if self.anchor is not None and self.anchor not in names:
            raise ValueError(f"anchor {self.anchor!r} is not one of the rated models")


def _restrict(counts: PairCounts) -> tuple[PairCounts, IntArray]:
    """The counts over the models that appear in them, renumbered; and those models."""
    rated = np.unique(np.concatenate([counts.first, counts.second]))
    renumber = np.full(counts.n_models, -1, dtype=np.int64)
    renumber[rated] = np.arange(len(rated))
    restricted = PairCounts(
        len(rated), renumber[counts.first], renumber[counts.second],
        counts.wins, counts.ties, counts.losses,
    )  # fmt: skip
    return restricted, rated


def _connected(counts: PairCounts) -> bool:
    """Whether the comparison graph of ``counts`` joins every model (union-find)."""
    parent = list(range(counts.n_models))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(counts.first.tolist(), counts.second.tolist(), strict=True):
        parent[root(i)] = root(j)
    return len({root(i) for i in range(counts.n_models)}) <= 1


def bootstrap_counts(counts: PairCounts, rounds: int, rng: np.random.Generator) -> PairCounts:
    """``rounds`` resamples of the votes behind ``counts`` (one row of it): a multinomial draw
    of the (pair, outcome) cells with the votes' total, the same law as drawing the votes
    with replacement."""
    cells = np.concatenate([counts.wins[0], counts.ties[0], counts.losses[0]])
    total = int(cells.sum())
    drawn = rng.multinomial(total, cells / total, size=rounds).astype(np.float64)
    p = len(counts.first)
    return PairCounts(
        counts.n_models, counts.first, counts.second,
        drawn[:, :p], drawn[:, p : 2 * p], drawn[:, 2 * p :],
    )  # fmt: skip


def _bootstrap(
    counts: PairCounts, options: RatingOptions, start: Any
) -> tuple[FloatArray, FloatArray, bool]:
    """Log-strengths ``(rounds, K)`` and ``ν`` ``(rounds,)`` of the bootstrap's refits."""
    rng = np.random.default_rng(options.seed)
    chunk = max(1, BOOTSTRAP_CELLS_PER_CHUNK // (counts.n_models + 1) ** 2)
    thetas, nus, converged = [], [], True
    for done in range(0, options.rounds, chunk):
        sample = bootstrap_counts(counts, min(chunk, options.rounds - done), rng)
        fit = fit_counts(
            sample, method=options.method, prior_sd=options.prior_sd,
            tie_prior_sd=options.tie_prior_sd, start=start,
        )  # fmt: skip
        thetas.append(fit.log_strength)
        nus.append(fit.nu)
        converged &= fit.converged
    return np.concatenate(thetas), np.concatenate(nus), converged


def _elo(theta: FloatArray, anchor: int | None) -> FloatArray:
    """Log-strengths (``(..., K)``) on the Elo-like scale, anchored."""
    if anchor is not None:
        theta = theta - theta[..., anchor : anchor + 1]
    return BASE_RATING + ELO_PER_LOG_STRENGTH * theta


def leaderboard(votes: Votes, options: RatingOptions | None = None) -> Leaderboard:
    """Bradley–Terry (Davidson ties by default) ratings of every model with votes, with
    bootstrap percentile intervals of ratings and ranks, tallies, and ``ν``.

    With ``options.rounds == 0`` the intervals collapse onto the estimates."""
    options = options or RatingOptions()
    counts, rated = _restrict(aggregate(votes, options.both_bad))
    names = [votes.names[i] for i in rated]
    options.check(names)
    if not names:
        raise ValueError("no votes to rate (both-bad votes are ignored with both_bad='ignore')")
    point = fit_counts(
        counts, method=options.method, prior_sd=options.prior_sd,
        tie_prior_sd=options.tie_prior_sd,
    )  # fmt: skip
    theta, nu, converged = point.log_strength, point.nu, point.converged
    if options.rounds:
        theta_b, nu_b, boot_converged = _bootstrap(counts, options, point)
        theta, nu, converged = (
            np.vstack([theta, theta_b]),
            np.concatenate([nu, nu_b]),
            (converged and boot_converged),
        )
    anchor = names.index(options.anchor) if options.anchor else None
    ratings = _elo(theta, anchor)
    models = _rows(names, ratings, rated, tallies(votes), options)
    replicates = nu[1:] if options.rounds else nu
    tail = (1 - options.level) / 2 * 100
    nu_low, nu_high = np.percentile(replicates, [tail, 100 - tail])
    return Leaderboard(
        models=models,
        unrated=tuple(n for i, n in enumerate(votes.names) if i not in set(rated.tolist())),
        nu=float(nu[0]), nu_interval=(float(nu_low), float(nu_high)), votes=len(votes),
        method=options.method, both_bad=options.both_bad, rounds=options.rounds,
        level=options.level, seed=options.seed, anchor=options.anchor,
        connected=_connected(counts), converged=bool(converged),
    )  # fmt: skip


def _rows(
    names: list[str],
    ratings: FloatArray,
    rated: IntArray,
    all_tallies: list[Tally],
    options: RatingOptions,
) -> tuple[ModelRating, ...]:
    """Leaderboard rows, best first: row 0 of ``ratings`` is the estimate, the rest (if any)
    the bootstrap's replicates."""
    replicates = ratings[1:] if len(ratings) > 1 else ratings
    tail = (1 - options.level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    # Rank 1 is the best; ties in rating share the better rank order arbitrarily.
    ranks = (-replicates).argsort(axis=1).argsort(axis=1) + 1
    rank_low, rank_high = np.percentile(ranks, [tail, 100 - tail], axis=0, method="nearest")
    order = np.argsort(-ratings[0], kind="stable")
    return tuple(
        ModelRating(
            name=names[i],
            rank=position + 1,
            rating=float(ratings[0, i]),
            low=float(low[i]),
            high=float(high[i]),
            rank_low=int(rank_low[i]),
            rank_high=int(rank_high[i]),
            log_strength=float((ratings[0, i] - BASE_RATING) / ELO_PER_LOG_STRENGTH),
            tally=all_tallies[int(rated[i])],
        )
        for position, i in enumerate(order.tolist())
    )


@dataclass(frozen=True)
class HeadToHead:
    """``first``'s record against ``second``: wins, ties and losses, both-bad votes apart."""

    first: str
    second: str
    wins: int
    ties: int
    losses: int
    both_bad: int

    def scored(self, both_bad: BothBad = "tie") -> tuple[int, int, int]:
        """(wins, ties, losses) with both-bad votes as ties, or left out."""
        if both_bad not in ("tie", "ignore"):
            raise ValueError(f"both_bad must be 'tie' or 'ignore', not {both_bad!r}")
        extra = self.both_bad if both_bad == "tie" else 0
        return self.wins, self.ties + extra, self.losses


def head_to_head(votes: Votes, first: str, second: str) -> HeadToHead:
    """The votes of duels between ``first`` and ``second``, from ``first``'s side."""
    for name in (first, second):
        if name not in votes.names:
            raise ValueError(f"model {name!r} is not among the votes' models")
    i, j = votes.names.index(first), votes.names.index(second)
    forward = (votes.model_a == i) & (votes.model_b == j)
    backward = (votes.model_a == j) & (votes.model_b == i)
    score = np.concatenate([votes.outcome[forward], 1.0 - votes.outcome[backward]])
    bad = np.concatenate([votes.both_bad[forward], votes.both_bad[backward]])
    return HeadToHead(
        first, second, wins=int(((score == 1.0) & ~bad).sum()),
        ties=int(((score == 0.5) & ~bad).sum()), losses=int(((score == 0.0) & ~bad).sum()),
        both_bad=int(bad.sum()),
    )  # fmt: skip
