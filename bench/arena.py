"""Arena rating speed: the product's Bradley–Terry fit (Davidson ties) on many votes, its
bootstrap, and a naive per-vote gradient-ascent baseline run in the same process.

    .venv/bin/python -m bench.arena                        # 1M votes, 50 models
    .venv/bin/python -m bench.arena --votes 20000 --models 8 --rounds 50 --json

Votes are simulated from known Davidson strengths (log-strengths evenly spread over
[-1.5, 1.5], ``ν = 0.5``), pairs drawn uniformly.

- product: ``hps.arena.ratings.leaderboard`` without the bootstrap (aggregation into per-pair
  counts, then damped Newton), median of ``--repeats`` runs; then with ``--rounds`` bootstrap
  replicates (multinomial resampling of the counts, batched refits);
- baseline: what one writes without aggregating: full-batch gradient ascent on the same
  penalised Davidson likelihood, the gradient summed vote by vote (numpy over the vote arrays,
  fixed step), run on a subsample of ``--baseline-votes`` votes until every rating is within
  ``--tolerance`` Elo points of the product's fit of that subsample (or ``--max-steps``). Its
  time is reported as measured and extrapolated to all the votes (each step's work is
  proportional to the votes); the product's fit of the subsample is timed for a same-size
  ratio. Target: the full fit under 2 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from hps.arena.bradley_terry import FloatArray
from hps.arena.ratings import ELO_PER_LOG_STRENGTH, RatingOptions, Votes, leaderboard

TARGET_SECONDS = 2.0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench.arena", description=__doc__.split("\n")[0])
    parser.add_argument("--votes", type=int, default=1_000_000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap replicates")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-votes", type=int, default=50_000)
    parser.add_argument("--tolerance", type=float, default=1.0, help="Elo points")
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.models < 2:
        parser.error("--models must be at least 2")
    for name in ("votes", "repeats", "baseline_votes", "max_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rounds < 0:
        parser.error("--rounds must be 0 or more")
    args.baseline_votes = min(args.baseline_votes, args.votes)
    return args


def simulate(votes: int, models: int, seed: int) -> tuple[Votes, FloatArray]:
    """Davidson votes from known strengths; returns them and the true log-strengths."""
    rng = np.random.default_rng(seed)
    theta = np.linspace(-1.5, 1.5, models)
    a = rng.integers(0, models, votes)
    b = (a + rng.integers(1, models, votes)) % models
    pi_a, pi_b = np.exp(theta[a]), np.exp(theta[b])
    tie = 0.5 * np.sqrt(pi_a * pi_b)
    u = rng.random(votes) * (pi_a + pi_b + tie)
    outcome = np.where(u < pi_a, 1.0, np.where(u < pi_a + pi_b, 0.0, 0.5))
    return Votes.create([f"m{i}" for i in range(models)], a, b, outcome), theta - theta.mean()


def subsample(votes: Votes, n: int) -> Votes:
    return Votes.create(votes.names, votes.model_a[:n], votes.model_b[:n], votes.outcome[:n])


def timed_fit(votes: Votes, options: RatingOptions, repeats: int) -> tuple[float, Any]:
    seconds, board = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        board = leaderboard(votes, options)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), board


def naive_gradient_ascent(
    votes: Votes, target: FloatArray, tolerance: float, max_steps: int
) -> tuple[float, int, float]:
    """Full-batch gradient ascent on the per-vote penalised Davidson log-likelihood (same
    priors as the product's defaults): (seconds, steps, final max error in Elo points)."""
    k, n = len(votes.names), len(votes)
    a, b, o = votes.model_a, votes.model_b, votes.outcome
    half_score = np.where(o == 1.0, 0.5, np.where(o == 0.0, -0.5, 0.0))
    is_tie = (o == 0.5).astype(np.float64)
    ridge = tie_ridge = 1.0 / 9.0
    step = k / 2.0  # about 1 / curvature of the mean log-likelihood per model
    theta, eta = np.zeros(k), 0.0
    start = time.perf_counter()
    steps, error = 0, float("inf")
    while steps < max_steps:
        half = (theta[a] - theta[b]) / 2
        log_d = np.logaddexp(np.logaddexp(half, -half), eta)
        p_a, p_b, p_t = np.exp(half - log_d), np.exp(-half - log_d), np.exp(eta - log_d)
        g = half_score - (p_a - p_b) / 2
        grad = np.bincount(a, g, minlength=k) - np.bincount(b, g, minlength=k) - ridge * theta
        grad_eta = float((is_tie - p_t).sum()) - tie_ridge * eta
        theta = theta + step * grad / n
        eta += step * grad_eta / n / k
        steps += 1
        centred = theta - theta.mean()
        error = float(np.abs(centred - target).max() * ELO_PER_LOG_STRENGTH)
        if error < tolerance:
            break
    return time.perf_counter() - start, steps, error


def run(args: argparse.Namespace) -> dict[str, Any]:
    votes, truth = simulate(args.votes, args.models, args.seed)
    fit_s, board = timed_fit(votes, RatingOptions(rounds=0), args.repeats)
    boot_s, boot_board = timed_fit(votes, RatingOptions(rounds=args.rounds, seed=args.seed), 1)
    small = subsample(votes, args.baseline_votes)
    small_s, small_board = timed_fit(small, RatingOptions(rounds=0), args.repeats)
    target = np.array([small_board.models[[m.name for m in small_board.models].index(name)]
                       .log_strength for name in votes.names])  # fmt: skip
    naive_s, steps, error = naive_gradient_ascent(small, target, args.tolerance, args.max_steps)
    estimated = np.array([next(m.log_strength for m in board.models if m.name == name)
                          for name in votes.names])  # fmt: skip
    naive_full = naive_s * args.votes / args.baseline_votes
    return {
        "votes": args.votes, "models": args.models, "rounds": args.rounds,
        "fit_s": fit_s, "fit_converged": board.converged,
        "bootstrap_s": boot_s, "bootstrap_per_round_ms": 1000 * boot_s / max(args.rounds, 1),
        "max_error_vs_truth_elo": float(np.abs(estimated - truth).max() * ELO_PER_LOG_STRENGTH),
        "nu": board.nu, "nu_interval": list(boot_board.nu_interval),
        "baseline_votes": args.baseline_votes, "product_subsample_fit_s": small_s,
        "naive_subsample_s": naive_s, "naive_steps": steps, "naive_final_error_elo": error,
        "naive_reached_tolerance": error < args.tolerance, "tolerance_elo": args.tolerance,
        "naive_extrapolated_full_s": naive_full,
        "ratio_subsample": naive_s / small_s, "ratio_full_extrapolated": naive_full / fit_s,
        "target_s": TARGET_SECONDS, "meets_target": fit_s < TARGET_SECONDS,
    }  # fmt: skip


def print_table(result: dict[str, Any]) -> None:
    r = result
    rows = [
        ("product fit (Newton on pair counts)", f"{r['votes']:,}", f"{r['fit_s']:.3f} s"),
        (f"product fit + {r['rounds']} bootstrap rounds", f"{r['votes']:,}",
         f"{r['bootstrap_s']:.3f} s ({r['bootstrap_per_round_ms']:.2f} ms/round)"),
        ("product fit, subsample", f"{r['baseline_votes']:,}",
         f"{r['product_subsample_fit_s']:.4f} s"),
        (f"naive per-vote gradient ascent ({r['naive_steps']} steps)", f"{r['baseline_votes']:,}",
         f"{r['naive_subsample_s']:.3f} s"),
        ("naive, extrapolated", f"{r['votes']:,}", f"{r['naive_extrapolated_full_s']:.1f} s"),
    ]  # fmt: skip
    print(f"Arena ratings: {r['votes']:,} votes over {r['models']} models (Davidson ties)")
    for name, size, seconds in rows:
        print(f"  {name:<52} {size:>11}  {seconds}")
    reached = "reached" if r["naive_reached_tolerance"] else "did NOT reach"
    print(f"  naive {reached} {r['tolerance_elo']:g} Elo of the product's fit "
          f"(final error {r['naive_final_error_elo']:.2f})")  # fmt: skip
    print(f"  ratio naive/product: {r['ratio_subsample']:.0f}x on the subsample, "
          f"{r['ratio_full_extrapolated']:.0f}x extrapolated to all votes")  # fmt: skip
    print(f"  max |estimate - truth|: {r['max_error_vs_truth_elo']:.1f} Elo; nu {r['nu']:.3f} "
          f"[{r['nu_interval'][0]:.3f}, {r['nu_interval'][1]:.3f}] (true 0.5)")  # fmt: skip
    verdict = "meets" if r["meets_target"] else "MISSES"
    print(f"  full fit {r['fit_s']:.3f} s {verdict} the {r['target_s']:g} s target")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result


if __name__ == "__main__":
    main()
