"""One guild's arena leaderboard from its rating votes, as ``hps leaderboard`` prints it and the
``leaderboard`` job stores it: the one place both build it, so they agree for the same data.

Votes come as the database reads them (``db.leaderboards.guild_rating_votes``): model ids per
side (the base generator as one more id, and a negative id for each named external
configuration of harvested picks between generators, ``sdxl`` say), outcomes, and a count of
both-bad votes left out; ``names`` gives each id's display name. Nothing here reads the
database or knows Discord.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hps.arena.chart import leaderboard_png, leaderboard_text
from hps.arena.ratings import Leaderboard, RatingOptions, Votes, leaderboard

# Room left in one 2,000-character message for the requester's mention, the vote counts and
# the escaping of mentions in model names.
POST_TABLE_CHARS = 1750


class RatedVotes(Protocol):
    """What the database reads (``db.arena.RatingVotes``)."""

    @property
    def model_a(self) -> Sequence[int]: ...
    @property
    def model_b(self) -> Sequence[int]: ...
    @property
    def outcome(self) -> Sequence[float]: ...
    @property
    def both_bad(self) -> int: ...


@dataclass(frozen=True)
class GuildVotes:
    """A guild's counted votes: ``model_a``/``model_b`` ids and ``outcome`` per vote (1: A
    won, 0: B won, 0.5: tie), ``both_bad`` the votes not rated, ``names`` by id."""

    guild_id: int
    model_a: Sequence[int]
    model_b: Sequence[int]
    outcome: Sequence[float]
    both_bad: int
    names: Mapping[int, str]

    @classmethod
    def of(cls, guild_id: int, votes: RatedVotes, names: Mapping[int, str]) -> GuildVotes:
        """A guild's votes as the database read them, with the names of their model ids."""
        return cls(guild_id, votes.model_a, votes.model_b, votes.outcome, votes.both_bad, names)

    def __len__(self) -> int:
        return len(self.outcome)

    @property
    def harvested(self) -> int:
        """How many of the votes are harvested picks between generators (negative ids)."""
        first = np.asarray(self.model_a, dtype=np.int64)
        second = np.asarray(self.model_b, dtype=np.int64)
        return int(np.count_nonzero((first < 0) | (second < 0)))


def rate_guild(votes: GuildVotes, options: RatingOptions) -> Leaderboard | None:
    """Bradley–Terry ratings of the configurations in ``votes`` (None without a rated vote)."""
    if not len(votes):
        return None
    first = np.asarray(votes.model_a, dtype=np.int64)
    second = np.asarray(votes.model_b, dtype=np.int64)
    ids = np.unique(np.concatenate([first, second]))  # ascending, as ``RatingVotes.models``
    return leaderboard(
        Votes.create(
            [votes.names[int(model_id)] for model_id in ids],
            np.searchsorted(ids, first),
            np.searchsorted(ids, second),
            np.asarray(votes.outcome, dtype=np.float64),
        ),
        options,
    )


def leaderboard_report(votes: GuildVotes, board: Leaderboard) -> dict[str, Any]:
    """The JSON of a guild's leaderboard (``hps leaderboard`` prints it, the job stores it)."""
    report: dict[str, Any] = {
        "guild": votes.guild_id,
        "both_bad_votes": votes.both_bad,
        "harvested_pick_votes": votes.harvested,
    }
    report.update(board.to_dict())
    return report


def no_votes_sentence(votes: GuildVotes) -> str:
    """What a guild with no rated vote reads instead of a leaderboard."""
    bad = votes.both_bad
    left_out = (
        f" ({bad} both-bad vote{'s' if bad != 1 else ''} so far, which are counted, not rated)"
        if bad
        else ""
    )
    return (
        "No leaderboard yet: no arena duel of this server has closed with a vote for one side "
        f"or a tie{left_out}. Start one with `/hps arena`."
    )


def leaderboard_post(votes: GuildVotes, board: Leaderboard | None) -> tuple[str, bytes | None]:
    """The channel's text (the table, or :func:`no_votes_sentence`) and the chart's PNG (None
    without a leaderboard). Model names stay inside the table's code block."""
    if board is None:
        return no_votes_sentence(votes), None
    counted = f"{votes.both_bad} both-bad votes counted, not rated." if votes.both_bad else ""
    harvested = votes.harvested
    picks = f"{harvested} rated votes are harvested picks." if harvested else ""
    table = leaderboard_text(board, limit=POST_TABLE_CHARS)
    text = "\n".join(part for part in (table, counted, picks) if part)
    return text, leaderboard_png(board)
