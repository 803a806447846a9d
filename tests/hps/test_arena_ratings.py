"""Arena ratings: closed forms of small cases, symmetry and order invariance, the Davidson
likelihood against a direct numeric optimisation, recovery of known strengths at the stated
coverage, both-bad votes, tallies, head-to-head records and the win-rate interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hps.arena.bradley_terry import log_likelihood_per_vote
from hps.arena.ratings import (
    ELO_PER_LOG_STRENGTH,
    RatingOptions,
    Votes,
    head_to_head,
    leaderboard,
    votes_from_pairs,
    win_rate_interval,
)

NO_PRIOR = RatingOptions(prior_sd=math.inf, tie_prior_sd=math.inf, rounds=0)


def strengths(board) -> dict[str, float]:
    return {m.name: m.log_strength for m in board.models}


def test_plain_bradley_terry_three_wins_one_loss_is_log_3() -> None:
    votes = votes_from_pairs([("x", "y", 1)] * 3 + [("x", "y", 0)])
    board = leaderboard(votes, RatingOptions(method="half", prior_sd=math.inf, rounds=0))
    s = strengths(board)
    assert s["x"] - s["y"] == pytest.approx(math.log(3), abs=1e-9)
    assert s["x"] + s["y"] == pytest.approx(0, abs=1e-12)  # anchored at mean 0
    x, y = board.models
    assert (x.name, x.rank, y.rank) == ("x", 1, 2)
    assert x.rating - y.rating == pytest.approx(400 * math.log10(3))
    assert x.rating + y.rating == pytest.approx(2000)


def test_half_wins_count_a_tie_as_half() -> None:
    votes = votes_from_pairs([("x", "y", 1)] * 3 + [("x", "y", 0)] + [("x", "y", 0.5)] * 2)
    s = strengths(leaderboard(votes, RatingOptions(method="half", prior_sd=math.inf, rounds=0)))
    assert s["x"] - s["y"] == pytest.approx(math.log(4 / 2))


@pytest.mark.parametrize(("w", "l", "t"), [(3, 1, 2), (5, 2, 7), (1, 4, 1)])
def test_davidson_two_models_closed_form(w: int, l: int, t: int) -> None:  # noqa: E741
    # Two models: the model is saturated, P(win)=w/n, P(loss)=l/n, P(tie)=t/n, hence
    # d = ln(w/l) and nu = t / sqrt(w l).
    rows = [("x", "y", 1.0)] * w + [("y", "x", 1.0)] * l + [("y", "x", 0.5)] * t
    board = leaderboard(votes_from_pairs(rows), NO_PRIOR)
    s = strengths(board)
    assert s["x"] - s["y"] == pytest.approx(math.log(w / l), abs=1e-8)
    assert board.nu == pytest.approx(t / math.sqrt(w * l), rel=1e-8)


def test_ties_only_rate_models_equal_with_a_large_finite_nu() -> None:
    votes = votes_from_pairs([("x", "y", 0.5)] * 6 + [("y", "z", "tie")] * 6)
    board = leaderboard(votes, RatingOptions(rounds=50))
    assert all(abs(m.log_strength) < 1e-9 for m in board.models)
    assert 3 < board.nu < 1e6 and board.converged


def test_all_wins_stay_finite_with_the_prior_and_the_prior_matters_less_with_more_votes() -> None:
    few = strengths(leaderboard(votes_from_pairs([("x", "y", 1)] * 3), RatingOptions(rounds=0)))
    many = strengths(leaderboard(votes_from_pairs([("x", "y", 1)] * 300), RatingOptions(rounds=0)))
    assert 0 < few["x"] - few["y"] < many["x"] - many["y"] < 20


def random_votes(seed: int, n: int, k: int = 5, names=None) -> Votes:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    outcome = rng.choice([0.0, 0.5, 1.0], n, p=[0.3, 0.2, 0.5])
    bad = rng.random(n) < 0.05
    return Votes.create(names or [f"m{i}" for i in range(k)], a, b, outcome, bad)


def test_symmetry_sides_swapped_and_vote_order_shuffled_give_the_same_ratings() -> None:
    votes = random_votes(0, 400)
    options = RatingOptions(rounds=100, seed=3)
    board = leaderboard(votes, options)
    swapped = Votes.create(votes.names, votes.model_b, votes.model_a, 1 - votes.outcome,
                           votes.both_bad)  # fmt: skip
    order = np.random.default_rng(1).permutation(len(votes))
    shuffled = Votes.create(votes.names, votes.model_a[order], votes.model_b[order],
                            votes.outcome[order], votes.both_bad[order])  # fmt: skip
    for other in (swapped, shuffled):
        again = leaderboard(other, options)
        assert again.to_dict() == board.to_dict()  # aggregation forgets sides and order


def test_renaming_models_permutes_the_ratings_and_mirrored_votes_negate_them() -> None:
    votes = random_votes(2, 300, k=4)
    s = strengths(leaderboard(votes, NO_PRIOR))
    permuted = [3, 0, 2, 1]  # model i becomes model permuted[i]
    names = [votes.names[permuted.index(j)] for j in range(4)]
    a, b = np.take(permuted, votes.model_a), np.take(permuted, votes.model_b)
    renamed = Votes.create(names, a, b, votes.outcome, votes.both_bad)
    assert strengths(leaderboard(renamed, NO_PRIOR)) == pytest.approx(s, abs=1e-9)
    mirrored = Votes.create(votes.names, votes.model_a, votes.model_b, 1 - votes.outcome,
                            votes.both_bad)  # fmt: skip
    assert strengths(leaderboard(mirrored, NO_PRIOR)) == pytest.approx(
        {k: -v for k, v in s.items()}, abs=1e-9
    )


def test_davidson_fit_matches_a_direct_numeric_optimisation_of_the_per_vote_likelihood() -> None:
    optimize = pytest.importorskip("scipy.optimize")
    votes = random_votes(5, 250, k=4)
    prior_sd, tie_prior_sd = 2.0, 3.0
    board = leaderboard(votes, RatingOptions(prior_sd=prior_sd, tie_prior_sd=tie_prior_sd,
                                             rounds=0))  # fmt: skip

    def negative_posterior(x: np.ndarray) -> float:
        theta, eta = x[:4], x[4]
        value = log_likelihood_per_vote(theta, math.exp(eta), votes.model_a, votes.model_b,
                                        votes.outcome)  # fmt: skip
        value -= (theta**2).sum() / (2 * prior_sd**2) + eta**2 / (2 * tie_prior_sd**2)
        return -value

    tight = {"xatol": 1e-9, "fatol": 1e-12, "maxiter": 20000}
    found = optimize.minimize(negative_posterior, np.zeros(5), method="Nelder-Mead", options=tight)
    theta = found.x[:4] - found.x[:4].mean()
    ours = strengths(board)
    assert [ours[n] for n in votes.names] == pytest.approx(theta.tolist(), abs=1e-4)
    assert board.nu == pytest.approx(math.exp(found.x[4]), rel=1e-4)
    ours_x = np.array([ours[n] for n in votes.names] + [math.log(board.nu)])
    assert negative_posterior(ours_x) <= found.fun + 1e-9  # ours is at least as good


def simulate(rng: np.random.Generator, theta: np.ndarray, nu: float, n: int) -> Votes:
    k = len(theta)
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    pi_a, pi_b = np.exp(theta[a]), np.exp(theta[b])
    tie = nu * np.sqrt(pi_a * pi_b)
    u = rng.random(n) * (pi_a + pi_b + tie)
    outcome = np.where(u < pi_a, 1.0, np.where(u < pi_a + pi_b, 0.0, 0.5))
    return Votes.create([f"m{i}" for i in range(k)], a, b, outcome)


def test_known_strengths_are_recovered_within_the_intervals_at_the_stated_coverage() -> None:
    theta = np.linspace(-1.0, 1.0, 8)
    theta -= theta.mean()
    true_elo = 1000 + ELO_PER_LOG_STRENGTH * theta
    nu = 0.6
    covered, checks, nu_covered = 0, 0, 0
    replications = 100
    for seed in range(replications):
        votes = simulate(np.random.default_rng(100 + seed), theta, nu, 20_000)
        board = leaderboard(votes, RatingOptions(rounds=200, seed=seed))
        assert board.converged
        by_name = {m.name: m for m in board.models}
        for i in range(8):
            m = by_name[f"m{i}"]
            covered += m.low <= true_elo[i] <= m.high
            checks += 1
            assert abs(m.rating - true_elo[i]) < 60
        nu_covered += board.nu_interval[0] <= nu <= board.nu_interval[1]
    coverage = covered / checks
    # 95% intervals: too narrow (coverage low) or too wide (near 1) both fail.
    assert 0.9 <= coverage <= 0.99, coverage
    assert nu_covered / replications >= 0.8


def test_a_clearly_better_model_ranks_first_with_an_interval_excluding_the_other() -> None:
    rng = np.random.default_rng(7)
    votes = simulate(rng, np.array([0.8, -0.8, 0.0]), 0.3, 300)
    board = leaderboard(votes, RatingOptions(rounds=400))
    first, *_rest, last = board.models
    assert (first.name, last.name) == ("m0", "m1")
    assert first.low > last.high
    assert (first.rank_low, first.rank_high) == (1, 1)


def test_both_bad_votes_are_ties_by_default_or_ignored_and_always_tallied() -> None:
    rows = [("x", "y", 1)] * 4 + [("x", "y", 0)] * 2 + [("x", "y", "both_bad")] * 4
    votes = votes_from_pairs(rows)
    as_ties = leaderboard(votes, RatingOptions(rounds=0))
    ignored = leaderboard(votes, RatingOptions(rounds=0, both_bad="ignore"))
    rows_ties = [("x", "y", 1)] * 4 + [("x", "y", 0)] * 2 + [("x", "y", 0.5)] * 4
    assert (
        as_ties.to_dict()["models"][0]["rating"]
        == leaderboard(votes_from_pairs(rows_ties), RatingOptions(rounds=0)).to_dict()["models"][0][
            "rating"
        ]
    )
    assert as_ties.nu > ignored.nu  # four more ties
    x = as_ties.models[0]
    assert (x.tally.votes, x.tally.wins, x.tally.ties, x.tally.losses, x.tally.both_bad) == (
        10, 4, 0, 2, 4,
    )  # fmt: skip
    only_bad = votes_from_pairs([("x", "y", "both_bad")] * 3 + [("x", "z", 1)], ["x", "y", "z"])
    board = leaderboard(only_bad, RatingOptions(rounds=0, both_bad="ignore"))
    assert board.unrated == ("y",) and {m.name for m in board.models} == {"x", "z"}


def test_tallies_and_head_to_head_count_from_each_side() -> None:
    votes = votes_from_pairs(
        [("a", "b", 1), ("b", "a", 1), ("b", "a", 0), ("a", "b", 0.5), ("a", "c", 1),
         ("c", "a", "both_bad")]
    )  # fmt: skip
    record = head_to_head(votes, "a", "b")
    assert (record.wins, record.ties, record.losses, record.both_bad) == (2, 1, 1, 0)
    reverse = head_to_head(votes, "b", "a")
    assert (reverse.wins, reverse.ties, reverse.losses) == (1, 1, 2)
    assert head_to_head(votes, "a", "c").scored() == (1, 1, 0)
    assert head_to_head(votes, "a", "c").scored("ignore") == (1, 0, 0)
    board = leaderboard(votes, RatingOptions(rounds=20))
    tallies = {m.name: m.tally for m in board.models}
    assert (tallies["a"].votes, tallies["a"].wins, tallies["a"].both_bad) == (6, 3, 1)
    assert sum(t.votes for t in tallies.values()) == 2 * len(votes)


def test_wilson_interval_known_values_and_ties_count_half() -> None:
    rate = win_rate_interval(8, 0, 2)
    assert (rate.rate, rate.votes) == (0.8, 10)
    assert (rate.low, rate.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert win_rate_interval(6, 4, 0).rate == 0.8
    assert win_rate_interval(0, 0, 0).low == 0.0
    wide, narrow = win_rate_interval(6, 0, 4, 0.99), win_rate_interval(6, 0, 4, 0.8)
    assert wide.low < narrow.low < 0.6 < narrow.high < wide.high


def test_the_bootstrap_is_seeded() -> None:
    votes = random_votes(4, 200)
    one = leaderboard(votes, RatingOptions(rounds=50, seed=1)).to_dict()
    assert one == leaderboard(votes, RatingOptions(rounds=50, seed=1)).to_dict()
    assert one != leaderboard(votes, RatingOptions(rounds=50, seed=2)).to_dict()


def test_anchor_pins_a_named_model_at_1000() -> None:
    votes = random_votes(6, 300, k=3)
    board = leaderboard(votes, RatingOptions(rounds=30, anchor="m1"))
    m1 = next(m for m in board.models if m.name == "m1")
    assert (m1.rating, m1.low, m1.high) == pytest.approx((1000, 1000, 1000))
    mean_board = leaderboard(votes, RatingOptions(rounds=0))
    assert sum(m.rating for m in mean_board.models) / 3 == pytest.approx(1000)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Votes.create(["a", "b"], [0], [0], [1]), "pits 'a' against itself"),
        (lambda: Votes.create(["a", "b"], [0], [2], [1]), "model_b holds an index outside 0..1"),
        (lambda: Votes.create(["a", "b"], [0], [1], [0.7]), "outcome 0.7"),
        (lambda: Votes.create(["a", "b"], [0, 1], [1], [1]), "of one length"),
        (lambda: Votes.create(["a", "a"], [0], [1], [1]), "distinct"),
        (lambda: votes_from_pairs([("a", "b", "win")]), "outcome 'win'"),
        (lambda: votes_from_pairs([("a", "q", 1)], ["a", "b"]), "unknown model 'q'"),
        (lambda: leaderboard(votes_from_pairs([("a", "b", 1)]), RatingOptions(level=1.5)),
         "level must be between 0 and 1"),
        (lambda: leaderboard(votes_from_pairs([("a", "b", 1)]), RatingOptions(anchor="z")),
         "anchor 'z'"),
        (lambda: leaderboard(votes_from_pairs([], ["a"])), "no votes to rate"),
        (lambda: leaderboard(votes_from_pairs([("a", "b", 1)]),
                             RatingOptions(method="elo")),  # type: ignore[arg-type]
         "method must be one of davidson, half"),
        (lambda: leaderboard(votes_from_pairs([("a", "b", 1), ("c", "d", 1)]),
                             RatingOptions(prior_sd=math.inf, rounds=0)), "not identified"),
        (lambda: win_rate_interval(-1, 0, 0), "must not be negative"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_a_clear_message(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_disconnected_comparisons_are_flagged() -> None:
    board = leaderboard(votes_from_pairs([("a", "b", 1), ("c", "d", 1)]), RatingOptions(rounds=0))
    assert not board.connected
    assert leaderboard(votes_from_pairs([("a", "b", 1), ("b", "c", 1)]),
                       RatingOptions(rounds=0)).connected  # fmt: skip
