"""What a guild's arena leaderboard is made of: the votes of its own duels (consent applied),
the harvested picks between generators (:mod:`db.harvest_ratings`, consent applied), and the
display names of the configurations in them. The leaderboard's scope is decided here, for
``hps leaderboard`` and the ``leaderboard`` job alike: one guild, never pooled.

Rating ids: a model version's id, :data:`db.arena.BASE_MODEL_ID` (0) for the base generator,
and a *negative* id for each named external configuration of the harvested picks (``sdxl``,
``midjourney v6.1``): ``-1, -2, ...`` in the labels' sorted order, assigned per read (they
name nothing in the database). The harvested votes follow the duel votes in the arrays.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.orm import Session

from db.arena import RatingVotes, configuration_names, rating_votes
from db.harvest_ratings import HarvestVotes, harvest_rating_votes
from db.scope import Scope

HARVESTED_SUFFIX = " (harvested)"


def label_ids(labels: list[str]) -> dict[str, int]:
    """The negative rating id of each external configuration label (sorted: -1, -2, ...)."""
    return {label: -(index + 1) for index, label in enumerate(sorted(labels))}


def label_names(ids: Mapping[str, int], taken: Mapping[int, str]) -> dict[int, str]:
    """Display names of the labels' ids: the label itself, or ``<label> (harvested)`` where
    a configuration of the duels already has that name (``base``, say)."""
    used = set(taken.values())
    return {
        model_id: label + HARVESTED_SUFFIX if label in used else label
        for label, model_id in ids.items()
    }


def merge_harvested(votes: RatingVotes, harvested: HarvestVotes) -> dict[str, int]:
    """Append ``harvested``'s wins to ``votes`` (winner as side A, outcome 1.0) under the
    labels' negative ids; returns those ids by label."""
    ids = label_ids(harvested.labels)
    for winner, loser in zip(harvested.winners, harvested.losers, strict=True):
        votes.model_a.append(ids[winner])
        votes.model_b.append(ids[loser])
        votes.outcome.append(1.0)
    return ids


def guild_rating_votes(
    session: Session, guild_id: int, *, include_open: bool = False, harvested: bool = True
) -> tuple[RatingVotes, dict[int, str]]:
    """The counted votes of ``guild_id``'s closed duels (open ones too with ``include_open``),
    then, with ``harvested``, its harvested picks between differently labelled generators,
    and the display name of every rating id in them."""
    scope = Scope.guild(guild_id)
    votes = rating_votes(session, scope, closed_only=not include_open)
    names = configuration_names(session, votes.models)
    if harvested:
        ids = merge_harvested(votes, harvest_rating_votes(session, scope))
        names.update(label_names(ids, names))
    return votes, names
