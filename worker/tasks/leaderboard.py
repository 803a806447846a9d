"""The arena's ``leaderboard`` job (``/hps leaderboard``): Bradley–Terry ratings (Davidson ties)
of the job's guild's model configurations from its closed duels, with bootstrap intervals and
vote tallies, posted in the channel as a table and a PNG chart.

Parameters (``jobqueue.contracts.LeaderboardParams``): ``rounds`` (bootstrap rounds, 0: no
intervals), ``seed``, ``include_open`` (count open duels' votes too). The stored result's
``leaderboard`` is what ``hps leaderboard --guild`` prints for the same data and options (both
build it with ``hps.arena.board``); a guild without a rated vote gets a sentence, no chart. The
post follows the bot's generic contract ``{"text", "files": [{"sha256", "filename"}]}``.
"""

from __future__ import annotations

from db.leaderboards import guild_rating_votes
from jobqueue.contracts import (
    LeaderboardParams,
    LeaderboardResult,
    OutboxKind,
    Post,
    PostedFile,
)
from worker.errors import JobFailure
from worker.lifecycle import JobContext, JobOutcome

CHART_FILENAME = "leaderboard.png"
MAX_CHART_BYTES = 8 * 1024 * 1024  # below Discord's smallest upload limit (10 MiB)


def arena_leaderboard(context: JobContext[LeaderboardParams]) -> JobOutcome:
    """Rate the guild's configurations, draw the chart, store it, and describe both."""
    from hps.arena.board import GuildVotes, leaderboard_post, leaderboard_report, rate_guild
    from hps.arena.ratings import RatingOptions

    params, guild_id = context.params, context.guild_id
    if guild_id is None or context.scope.is_pooled:
        raise JobFailure("a leaderboard is one server's: ask for it in that server")
    context.progress(0.05, "reading the votes", force=True)
    votes, names = context.transaction(
        lambda session: guild_rating_votes(session, guild_id, include_open=params.include_open)
    )
    guild_votes = GuildVotes.of(guild_id, votes, names)
    context.progress(0.2, "rating the models", force=True)
    board = rate_guild(guild_votes, RatingOptions(rounds=params.rounds, seed=params.seed))
    text, png = leaderboard_post(guild_votes, board)
    files = []
    if png is not None and len(png) <= MAX_CHART_BYTES:
        files.append(PostedFile(sha256=context.runtime.store.put(png), filename=CHART_FILENAME))
    report = None if board is None else leaderboard_report(guild_votes, board)
    result = LeaderboardResult(guild_id=guild_id, leaderboard=report, text=text, files=files)
    return JobOutcome(
        result=result,
        outbox_kind=OutboxKind.leaderboard_result,
        outbox_payload=Post(text=text, files=files),
    )
