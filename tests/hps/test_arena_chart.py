"""The leaderboard chart is a valid PNG (one row per model, sized accordingly) and the text
table fits a Discord message, however many models and however long their names."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from hps.arena.chart import TABLE_LIMIT, leaderboard_png, leaderboard_text
from hps.arena.ratings import Leaderboard, RatingOptions, Votes, leaderboard, votes_from_pairs


def board_of(k: int, names: list[str] | None = None, n: int = 3000) -> Leaderboard:
    rng = np.random.default_rng(k)
    a = rng.integers(0, k, n)
    b = (a + rng.integers(1, k, n)) % k
    outcome = rng.choice([0.0, 0.5, 1.0], n)
    votes = Votes.create(names or [f"model-{i}" for i in range(k)], a, b, outcome)
    return leaderboard(votes, RatingOptions(rounds=50))


def test_chart_is_a_png_that_grows_with_the_models() -> None:
    small, large = board_of(3), board_of(20)
    images = [Image.open(io.BytesIO(leaderboard_png(b))) for b in (small, large)]
    for image in images:
        image.verify()
    assert images[0].format == "PNG" and images[1].size[1] > images[0].size[1]
    capped = Image.open(io.BytesIO(leaderboard_png(board_of(60), max_models=40)))
    assert capped.size[1] == Image.open(io.BytesIO(leaderboard_png(board_of(40)))).size[1]


def test_chart_draws_names_literally() -> None:
    board = leaderboard(votes_from_pairs([("$x$ lora", "base 🎨", 1)] * 3), RatingOptions(rounds=5))
    assert leaderboard_png(board).startswith(b"\x89PNG\r\n\x1a\n")


def test_table_lists_best_first_with_intervals_and_votes() -> None:
    board = board_of(4)
    text = leaderboard_text(board)
    lines = text.splitlines()
    assert lines[1] == "```" and lines[-1] == "```"
    best = board.models[0]
    row = next(line for line in lines if line.startswith(" 1 "))
    assert best.name in row and f"[{best.low:.0f}, {best.high:.0f}]" in row
    assert f"{best.tally.wins}-{best.tally.ties}-{best.tally.losses}" in row
    assert "more" not in text


def test_table_fits_the_limit_and_says_how_many_more() -> None:
    names = [f"a-very-long-lora-name-`{i}`-" + "x" * 80 for i in range(200)]
    board = board_of(200, names, n=20_000)
    text = leaderboard_text(board, top=200)
    assert len(text) <= TABLE_LIMIT
    shown = sum(1 for line in text.splitlines() if line[:3].strip().isdigit())
    assert 10 < shown < 200
    assert f"... and {200 - shown} more" in text
    assert text.count("```") == 2  # backticks in names cannot close the block
    top5 = leaderboard_text(board, top=5)
    assert "... and 195 more" in top5
