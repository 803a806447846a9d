"""``hps leaderboard``: Bradley–Terry ratings (Davidson ties) of a guild's model
configurations from its closed arena duels and its harvested picks between labelled generators,
with bootstrap intervals, as JSON (and a PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from cli.output import print_json
from cli.resources import open_resources

if TYPE_CHECKING:
    from hps.arena.board import GuildVotes


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps leaderboard`` to the ``hps`` parser."""
    board = subcommands.add_parser(
        "leaderboard",
        help="arena ratings of model configurations from duel votes and harvested picks "
        "(JSON; --png chart)",
        description="Bradley-Terry ratings with Davidson ties of one guild's model "
        "configurations (LoRA versions and the base generator) from the votes of its closed "
        "duels, and of its harvested generators from members' picks between images labelled "
        "with different generators; consent applied, with bootstrap 95%% intervals and vote "
        "tallies. Both-bad votes are counted, not rated.",
    )
    board.add_argument("--guild", type=int, required=True, help="the guild whose duels to rate")
    # jobqueue.contracts.DEFAULT_LEADERBOARD_ROUNDS (/hps leaderboard's), not imported: it
    # would make every ``hps`` command start slower.
    board.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds (0: none)")
    board.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    board.add_argument("--png", type=Path, help="also write the leaderboard chart here")
    board.add_argument(
        "--include-open", action="store_true", help="count votes of duels still open too"
    )
    board.set_defaults(handler=cmd_leaderboard)


def read_votes(guild_id: int, include_open: bool) -> GuildVotes:
    """The guild's counted duel votes and harvested picks between labelled generators, with
    the display name of every rating id in them."""
    from db.leaderboards import guild_rating_votes
    from hps.arena.board import GuildVotes

    with open_resources() as resources, resources.factory() as session:
        votes, names = guild_rating_votes(session, guild_id, include_open=include_open)
        return GuildVotes.of(guild_id, votes, names)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Fit and print the leaderboard; write the chart with ``--png``."""
    from hps.arena.board import leaderboard_report, rate_guild
    from hps.arena.chart import leaderboard_png
    from hps.arena.ratings import RatingOptions

    votes = read_votes(args.guild, args.include_open)
    board = rate_guild(votes, RatingOptions(rounds=args.rounds, seed=args.seed))
    if board is None:
        raise ValueError(
            f"guild {args.guild} has no rated votes yet (duel votes or harvested picks between"
            f" labelled generators; {votes.both_bad} both-bad duel votes, which are counted but"
            " not rated)"
        )
    result = leaderboard_report(votes, board)
    if args.png is not None:
        args.png.write_bytes(leaderboard_png(board))
        result["png"] = str(args.png)
    print_json(result)
    return 0
