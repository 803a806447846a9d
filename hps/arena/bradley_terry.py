"""Bradley–Terry with ties (Davidson 1970) fitted by Newton's method on aggregated pair counts.

The model: each model ``k`` has a log-strength ``θ_k`` (``π_k = exp θ_k``); in a duel of
``i`` against ``j``::

    P(i wins) = π_i / D,   P(j wins) = π_j / D,   P(tie) = ν √(π_i π_j) / D,
    D = π_i + π_j + ν √(π_i π_j)

(Davidson, "On extending the Bradley–Terry model to accommodate ties in paired comparison
experiments", JASA 65, 1970). Dividing by ``√(π_i π_j)`` shows that a pair's likelihood depends
only on ``d = θ_i − θ_j`` and ``η = log ν``: with ``w`` wins of ``i``, ``l`` of ``j`` and ``t``
ties, ``log L = (w − l) d/2 + t η − n log(e^{d/2} + e^{−d/2} + e^η)``, concave in ``(θ, η)``
(a log-sum-exp of linear forms), so damped Newton converges to the unique maximum.

``method="half"`` is plain Bradley–Terry with each tie counted as half a win and half a loss
(the ``ν = 0`` limit on the re-weighted counts; what FastChat's ``compute_elo_mle_with_tie``
does).

Priors keep every estimate finite (a model with only wins): ``θ ~ N(0, prior_sd²)`` (a ridge
of ``1 / prior_sd²``, which also anchors the mean log-strength at 0, because the likelihood's
gradient sums to zero over the models) and ``η ~ N(0, tie_prior_sd²)``. A further penalty
``(Σθ)² / 2`` does not move the optimum (it is 0 there) but keeps Newton's system regular
when the ridge is 0.

Everything is batched: ``B`` sets of pair counts (the point estimate is ``B = 1``; the
bootstrap's replicates are the rest) are fitted together, one linear solve per replicate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

Method = Literal["davidson", "half"]
METHODS: tuple[str, ...] = ("davidson", "half")

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class PairCounts:
    """Votes aggregated per unordered pair ``first[p] < second[p]``, seen from ``first``.

    ``wins``, ``ties`` and ``losses`` have shape ``(B, P)``: one row per set of counts.
    """

    n_models: int
    first: IntArray
    second: IntArray
    wins: FloatArray
    ties: FloatArray
    losses: FloatArray

    @property
    def rows(self) -> int:
        """How many sets of counts (``B``)."""
        return int(self.wins.shape[0])


@dataclass(frozen=True)
class Fit:
    """Maximum a posteriori log-strengths (``(B, K)``, mean 0) and tie parameters ``ν``."""

    log_strength: FloatArray
    nu: FloatArray
    iterations: int
    converged: bool


@dataclass(frozen=True)
class _Point:
    theta: FloatArray  # (B, K)
    eta: FloatArray  # (B,)


class _Problem:
    """The penalised log-likelihood of some pair counts, its gradient and Hessian."""

    def __init__(
        self, counts: PairCounts, method: Method, prior_sd: float, tie_prior_sd: float
    ) -> None:
        self.counts = counts
        self.ties_fitted = method == "davidson"
        wins, ties, losses = counts.wins, counts.ties, counts.losses
        if not self.ties_fitted:  # a tie is half a win and half a loss
            wins, ties, losses = wins + ties / 2, np.zeros_like(ties), losses + ties / 2
        self.diff = (wins - losses) / 2  # (B, P)
        self.ties = ties
        self.total = wins + ties + losses
        self.ridge = 0.0 if prior_sd == float("inf") else 1.0 / prior_sd**2
        self.tie_ridge = 1.0 / tie_prior_sd**2
        k = counts.n_models
        self.incidence = np.zeros((len(counts.first), k))  # +1 at first, -1 at second
        self.incidence[np.arange(len(counts.first)), counts.first] = 1.0
        self.incidence[np.arange(len(counts.first)), counts.second] = -1.0

    def size(self) -> int:
        """Unknowns per replicate: the log-strengths, and η when ties are fitted."""
        return self.counts.n_models + int(self.ties_fitted)

    def _probabilities(self, point: _Point) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Per pair: P(first wins), P(second wins), P(tie), and log D (all ``(B, P)``)."""
        d = point.theta[:, self.counts.first] - point.theta[:, self.counts.second]
        half = d / 2
        if self.ties_fitted:
            eta = np.broadcast_to(point.eta[:, None], d.shape)
            log_d = np.logaddexp(np.logaddexp(half, -half), eta)
            return np.exp(half - log_d), np.exp(-half - log_d), np.exp(eta - log_d)
        log_d = np.logaddexp(half, -half)
        return np.exp(half - log_d), np.exp(-half - log_d), np.zeros_like(d)

    def objective(self, point: _Point) -> FloatArray:
        """The penalised log-likelihood of each replicate, ``(B,)``."""
        d = point.theta[:, self.counts.first] - point.theta[:, self.counts.second]
        half = d / 2
        if self.ties_fitted:
            eta = point.eta[:, None]
            log_d = np.logaddexp(np.logaddexp(half, -half), eta)
            value = (self.diff * d + self.ties * eta - self.total * log_d).sum(axis=1)
            value -= self.tie_ridge * point.eta**2 / 2
        else:
            value = (self.diff * d - self.total * np.logaddexp(half, -half)).sum(axis=1)
        value -= self.ridge * (point.theta**2).sum(axis=1) / 2
        value -= point.theta.sum(axis=1) ** 2 / 2
        return np.asarray(value, dtype=np.float64)

    def newton_step(self, point: _Point) -> FloatArray:
        """The Newton direction of every replicate, ``(B, K [+ 1])``."""
        p_first, p_second, p_tie = self._probabilities(point)
        k, b = self.counts.n_models, p_first.shape[0]
        grad_d = self.diff - self.total * (p_first - p_second) / 2
        h_dd = self.total * ((p_first + p_second) / 4 - (p_first - p_second) ** 2 / 4)
        gradient = np.empty((b, self.size()))
        gradient[:, :k] = grad_d @ self.incidence
        gradient[:, :k] -= self.ridge * point.theta + point.theta.sum(axis=1, keepdims=True)
        # Negative Hessian: a weighted graph Laplacian, plus the priors.
        hessian = np.zeros((b, self.size(), self.size()))
        diagonal = h_dd @ np.abs(self.incidence) + self.ridge
        hessian[:, np.arange(k), np.arange(k)] = diagonal
        hessian[:, self.counts.first, self.counts.second] = -h_dd
        hessian[:, self.counts.second, self.counts.first] = -h_dd
        hessian[:, :k, :k] += 1.0  # the (Σθ)² / 2 penalty
        if self.ties_fitted:
            gradient[:, k] = (self.ties - self.total * p_tie).sum(axis=1)
            gradient[:, k] -= self.tie_ridge * point.eta
            h_de = -self.total * (p_first - p_second) * p_tie / 2
            cross = h_de @ self.incidence
            hessian[:, :k, k] = cross
            hessian[:, k, :k] = cross
            hessian[:, k, k] = (self.total * (p_tie - p_tie**2)).sum(axis=1) + self.tie_ridge
        try:
            return np.asarray(np.linalg.solve(hessian, gradient[..., None])[..., 0])
        except np.linalg.LinAlgError as error:
            raise ValueError(
                "the ratings are not identified: some models are never compared with the "
                "others; use a finite prior_sd"
            ) from error

    def moved(self, point: _Point, step: FloatArray, scale: FloatArray) -> _Point:
        """``point`` moved by ``scale × step`` (per replicate)."""
        k = self.counts.n_models
        theta = point.theta + scale[:, None] * step[:, :k]
        eta = point.eta + scale * step[:, k] if self.ties_fitted else point.eta
        return _Point(theta, eta)


def _damped(problem: _Problem, point: _Point, step: FloatArray) -> tuple[_Point, FloatArray]:
    """Halve each replicate's step until its objective does not decrease."""
    before = problem.objective(point)
    scale = np.ones(len(before))
    for _ in range(40):
        candidate = problem.moved(point, step, scale)
        worse = problem.objective(candidate) < before - 1e-12 * (1 + np.abs(before))
        if not worse.any():
            return candidate, scale
        scale = np.where(worse, scale / 2, scale)
    return problem.moved(point, step, scale), scale


def fit_counts(
    counts: PairCounts,
    *,
    method: Method = "davidson",
    prior_sd: float = 3.0,
    tie_prior_sd: float = 3.0,
    start: Fit | None = None,
    tolerance: float = 1e-9,
    max_iterations: int = 100,
) -> Fit:
    """Fit every row of ``counts`` (see the module's docstring for the model and priors).

    ``start`` warm-starts from an earlier fit (its first row is broadcast to every row).
    Converged when no unknown moves more than ``tolerance`` in a Newton step.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if not prior_sd > 0 or not tie_prior_sd > 0:
        raise ValueError("prior_sd and tie_prior_sd must be positive (inf: no prior)")
    problem = _Problem(counts, method, prior_sd, tie_prior_sd)
    b, k = counts.rows, counts.n_models
    point = _Point(np.zeros((b, k)), np.zeros(b))
    if start is not None:
        point = _Point(
            np.repeat(start.log_strength[:1], b, axis=0),
            np.repeat(np.log(np.maximum(start.nu[:1], 1e-300)), b),
        )
        if method == "half":
            point = _Point(point.theta, np.zeros(b))
    for iteration in range(1, max_iterations + 1):
        step = problem.newton_step(point)
        point, scale = _damped(problem, point, step)
        if np.max(np.abs(step) * scale[:, None], initial=0.0) < tolerance:
            return _result(point, method, iteration, True)
    return _result(point, method, max_iterations, False)


def _result(point: _Point, method: Method, iterations: int, converged: bool) -> Fit:
    nu = np.exp(point.eta) if method == "davidson" else np.zeros_like(point.eta)
    theta = point.theta - point.theta.mean(axis=1, keepdims=True)
    return Fit(theta, nu, iterations, converged)


def log_likelihood_per_vote(
    theta: FloatArray, nu: float, first: IntArray, second: IntArray, outcome: FloatArray
) -> float:
    """The Davidson log-likelihood summed vote by vote (no aggregation, no priors): a direct
    transcription of the model's probabilities, for checks and the naive baseline."""
    pi_i, pi_j = np.exp(theta[first]), np.exp(theta[second])
    tie = nu * np.sqrt(pi_i * pi_j)
    denominator = pi_i + pi_j + tie
    chosen = np.where(outcome == 1.0, pi_i, np.where(outcome == 0.0, pi_j, tie))
    return float(np.log(chosen / denominator).sum())
