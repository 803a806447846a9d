"""``hps leaderboard``: Bradley–Terry ratings (Davidson ties) of a guild's model
configurations from its closed arena duels, with bootstrap intervals, as JSON (and a PNG)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.output import print_json
from cli.resources import open_resources

if TYPE_CHECKING:
    from db.arena import RatingVotes


def register(subcommands: argparse._SubParsersAction) -> None:
    """Add ``hps leaderboard`` to the ``hps`` parser."""
    board = subcommands.add_parser(
        "leaderboard",
        help="arena ratings of model configurations from duel votes (JSON; --png chart)",
        description="Bradley-Terry ratings with Davidson ties of one guild's model "
        "configurations (LoRA versions and the base generator) from the votes of its closed "
        "duels, consent applied, with bootstrap 95%% intervals and vote tallies. Both-bad "
        "votes are counted, not rated.",
    )
    board.add_argument("--guild", type=int, required=True, help="the guild whose duels to rate")
    board.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds (0: none)")
    board.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    board.add_argument("--png", type=Path, help="also write the leaderboard chart here")
    board.add_argument(
        "--include-open", action="store_true", help="count votes of duels still open too"
    )
    board.set_defaults(handler=cmd_leaderboard)


def read_votes(guild_id: int, include_open: bool) -> tuple[RatingVotes, dict[int, str]]:
    """The guild's counted duel votes and the display name of every model id in them."""
    from db.arena import configuration_names, rating_votes
    from db.scope import Scope

    with open_resources() as resources, resources.factory() as session:
        votes = rating_votes(session, Scope.guild(guild_id), closed_only=not include_open)
        return votes, configuration_names(session, votes.models)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Fit and print the leaderboard; write the chart with ``--png``."""
    from hps.arena.chart import leaderboard_png
    from hps.arena.ratings import RatingOptions, Votes, leaderboard

    votes, names = read_votes(args.guild, args.include_open)
    if not len(votes):
        raise ValueError(
            f"guild {args.guild} has no rated duel votes yet"
            f" ({votes.both_bad} both-bad votes, which are counted but not rated)"
        )
    ids = votes.models
    index = {model_id: position for position, model_id in enumerate(ids)}
    board = leaderboard(
        Votes.create(
            [names[model_id] for model_id in ids],
            [index[model_id] for model_id in votes.model_a],
            [index[model_id] for model_id in votes.model_b],
            list(votes.outcome),
        ),
        RatingOptions(rounds=args.rounds, seed=args.seed),
    )
    result: dict[str, Any] = {"guild": args.guild, "both_bad_votes": votes.both_bad}
    result.update(board.to_dict())
    if args.png is not None:
        args.png.write_bytes(leaderboard_png(board))
        result["png"] = str(args.png)
    print_json(result)
    return 0
