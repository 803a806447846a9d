"""The ``leaderboard`` job's contract: the command's options, bounded; a guild's only."""

from __future__ import annotations

import pytest

from jobqueue.contracts import (
    DEFAULT_LEADERBOARD_ROUNDS,
    MAX_LEADERBOARD_ROUNDS,
    InvalidJobParams,
    LeaderboardParams,
    LeaderboardResult,
    parse_params,
)


def test_defaults_and_what_a_row_stores() -> None:
    params = parse_params("leaderboard", {})
    assert isinstance(params, LeaderboardParams)
    assert (params.rounds, params.seed, params.include_open) == (
        DEFAULT_LEADERBOARD_ROUNDS,
        0,
        False,
    )
    assert LeaderboardParams(rounds=0, include_open=True).stored() == {
        "rounds": 0,
        "include_open": True,
    }


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"rounds": -1}, "rounds", "rounds must be between 0 and"),
        ({"rounds": MAX_LEADERBOARD_ROUNDS + 1}, "rounds", "rounds must be between 0 and"),
        ({"scope": "pooled"}, "scope", "a leaderboard is one guild's"),
        ({"guild_id": 5}, "guild_id", "guild_id is not a parameter"),
    ],
)
def test_bad_parameters_are_refused_by_name(
    raw: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(InvalidJobParams) as refused:
        parse_params("leaderboard", raw)
    assert refused.value.field == field and message in str(refused.value)


def test_a_result_without_votes_has_no_leaderboard() -> None:
    result = LeaderboardResult(guild_id=1, leaderboard=None, text="No leaderboard yet")
    assert result.stored() == {
        "guild_id": 1,
        "leaderboard": None,
        "text": "No leaderboard yet",
        "files": [],
    }
