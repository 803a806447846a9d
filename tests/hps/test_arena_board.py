"""``hps.arena.board``: a guild's leaderboard from database-shaped votes (model ids, the base
generator as one more id), its JSON, and its post (table and chart, or the no-votes sentence)."""

from __future__ import annotations

from array import array

from hps.arena.board import (
    POST_TABLE_CHARS,
    GuildVotes,
    leaderboard_post,
    leaderboard_report,
    no_votes_sentence,
    rate_guild,
)
from hps.arena.ratings import RatingOptions, Votes, leaderboard

NAMES = {0: "base", 7: "liked (#7)", 3: "disliked (#3)"}


def _votes(both_bad: int = 2) -> GuildVotes:
    # liked beats base 3 of 4, base beats disliked 3 of 4, liked beats disliked, one tie.
    pairs = [(7, 0, 1.0)] * 3 + [(0, 7, 1.0)] + [(0, 3, 1.0)] * 3 + [(3, 0, 1.0)]
    pairs += [(3, 7, 0.0)] * 2 + [(7, 3, 0.5)]
    return GuildVotes(
        42,
        array("q", [a for a, _, _ in pairs]),
        array("q", [b for _, b, _ in pairs]),
        array("d", [o for _, _, o in pairs]),
        both_bad,
        NAMES,
    )


def test_rate_guild_maps_ids_to_names_as_a_direct_fit_would() -> None:
    votes, options = _votes(), RatingOptions(rounds=50, seed=3)
    board = rate_guild(votes, options)
    assert board is not None
    # The same fit by hand, models in ascending id order (as db.arena.RatingVotes.models).
    index = {0: 0, 3: 1, 7: 2}
    direct = leaderboard(
        Votes.create(
            ["base", "disliked (#3)", "liked (#7)"],
            [index[i] for i in votes.model_a],
            [index[i] for i in votes.model_b],
            list(votes.outcome),
        ),
        options,
    )
    assert board == direct
    assert [m.name for m in board.models] == ["liked (#7)", "base", "disliked (#3)"]
    report = leaderboard_report(votes, board)
    assert report["guild"] == 42 and report["both_bad_votes"] == 2
    assert report["models"] == [m.to_dict() for m in board.models]


def test_a_guild_without_rated_votes_gets_a_sentence_and_no_chart() -> None:
    empty = GuildVotes(42, array("q"), array("q"), array("d"), 1, {})
    assert rate_guild(empty, RatingOptions(rounds=10)) is None
    text, png = leaderboard_post(empty, None)
    assert png is None and text == no_votes_sentence(empty)
    assert text.startswith("No leaderboard yet") and "1 both-bad vote so far" in text
    assert "both-bad" not in no_votes_sentence(GuildVotes(42, [], [], [], 0, {}))


def test_the_post_is_a_table_and_a_png_within_discords_limits() -> None:
    names = {i: f"<@&{10**18 + i}> **m{i}** @everyone" * 3 for i in range(40)}
    pairs = [(i, (i + 1) % 40) for i in range(40)] * 3
    votes = GuildVotes(
        1, [a for a, _ in pairs], [b for _, b in pairs], [1.0, 0.0, 0.5] * 40, 5, names
    )
    board = rate_guild(votes, RatingOptions(rounds=0))
    text, png = leaderboard_post(votes, board)
    assert png is not None and png.startswith(b"\x89PNG")
    assert len(text) <= POST_TABLE_CHARS + 60 and "... and" in text  # rows cut to fit
    assert text.endswith("5 both-bad votes counted, not rated.")
