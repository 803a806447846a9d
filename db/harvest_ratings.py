"""Harvested picks as rating evidence between generators: the arena's other source of votes.

A harvested generation may say which model made each of its images (``Generation.params``, as
the harvesting adapters store it): ``image_models`` is a list with one label per image position
(None where unknown), and ``model`` a label for the whole generation (used for the images the
list leaves unlabelled, or for all of them without a list). A consented pick in a generation
whose images carry two or more different labels is, for the ratings, a win of the picked
image's model over each *other* label present in the set (once per label, however many images
it has; no ties). Nothing else is evidence: a skip, a pick of an unlabelled image, a generation
whose labelled images are all one model.

Midjourney: the version is a parameter of the prompt, so all four images of a grid are one
version and picks within a grid are no evidence between versions. Evidence across versions
exists only where one message mixes them (a multi-image message whose images are labelled
with different versions); none is invented.

These configurations are named by their label (``midjourney v6.1``, ``sdxl``), not by a model
version: :func:`harvest_rating_votes` returns label pairs, and :mod:`db.leaderboards` gives
them rating ids of their own beside the guild's model versions. Scope and consent are exactly
those of choices (:meth:`db.scope.Scope.choices`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Choice, Generation, Image
from db.scope import Scope

MAX_LABEL_CHARS = 64


@dataclass
class HarvestVotes:
    """Pairwise wins read from harvested picks: ``winners[i]`` beat ``losers[i]`` (labels);
    ``picks`` counts the picks that gave at least one."""

    winners: list[str] = field(default_factory=list)
    losers: list[str] = field(default_factory=list)
    picks: int = 0

    def __len__(self) -> int:
        return len(self.winners)

    @property
    def labels(self) -> list[str]:
        """The distinct labels that appear, sorted."""
        return sorted(set(self.winners) | set(self.losers))


def _label(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    label = " ".join(value.split())
    return label if label and len(label) <= MAX_LABEL_CHARS else None


def image_labels(params: Mapping[str, Any] | None) -> list[str | None] | None:
    """The label of each image position a generation's ``params`` give (``image_models``,
    gaps filled with ``model``), or None without a per-image list."""
    if not isinstance(params, Mapping):
        return None
    listed = params.get("image_models")
    if not isinstance(listed, list):
        return None
    whole = _label(params.get("model"))
    return [_label(value) or whole for value in listed]


def pick_wins(labels: Sequence[str | None], chosen_position: int) -> list[tuple[str, str]]:
    """``(winner, loser)`` pairs one pick of ``chosen_position`` among images labelled
    ``labels`` stands for: the picked model over each other label, in sorted order."""
    if not 0 <= chosen_position < len(labels):
        return []
    winner = labels[chosen_position]
    if winner is None:
        return []
    others = {label for label in labels if label is not None and label != winner}
    return [(winner, loser) for loser in sorted(others)]


def harvest_rating_votes(session: Session, scope: Scope) -> HarvestVotes:
    """Every consented pick in ``scope`` between images of different labelled models, as
    pairwise wins (in pick order). Generations without per-image labels are left out in SQL
    where the backend can (PostgreSQL's JSONB) and in Python in any case."""
    query = (
        select(Generation.params, Image.position)
        .select_from(Choice)
        .join(Generation, Generation.id == Choice.generation_id)
        .join(Image, Image.id == Choice.chosen_image_id)
        .where(scope.choices(), Generation.params["image_models"].is_not(None))
        .order_by(Choice.id)
        .execution_options(yield_per=10_000)
    )
    votes = HarvestVotes()
    for params, position in session.execute(query):
        labels = image_labels(params)
        wins = pick_wins(labels, int(position)) if labels is not None else []
        for winner, loser in wins:
            votes.winners.append(winner)
            votes.losers.append(loser)
        votes.picks += bool(wins)
    return votes
