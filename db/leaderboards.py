"""What a guild's arena leaderboard is made of: the votes of its own duels (consent applied)
and the display names of the configurations in them. The leaderboard's scope is decided here,
for ``hps leaderboard`` and the ``leaderboard`` job alike: one guild, never pooled."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.arena import RatingVotes, configuration_names, rating_votes
from db.scope import Scope


def guild_rating_votes(
    session: Session, guild_id: int, *, include_open: bool = False
) -> tuple[RatingVotes, dict[int, str]]:
    """The counted votes of ``guild_id``'s closed duels (open ones too with ``include_open``)
    and the display name of every model id in them."""
    votes = rating_votes(session, Scope.guild(guild_id), closed_only=not include_open)
    return votes, configuration_names(session, votes.models)
