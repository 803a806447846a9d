"""db.datasets.closed_duel_votes: the one query of duel votes that data may use, shared by
training sets (db.datasets.iter_duel_choice_sets) and exports (db.arena.iter_export_duel_votes,
export_duel_votes_per_prompt). Its consent and scope rules are pinned once here, for the
builder and for both callers: a voter who opted out, a prompt author who opted out, an open
duel and another guild's duel are never included."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from db.arena import (
    DuelImage,
    close_duel,
    create_duel,
    export_duel_votes_per_prompt,
    get_duel,
    iter_export_duel_votes,
    open_duel,
    record_vote,
    set_duel_images,
)
from db.datasets import closed_duel_votes, iter_duel_choice_sets
from db.models import DuelVote, DuelVoteKind, ModelKind
from db.privacy import opt_in, opt_out
from db.registry import register_model_version
from db.scope import Scope

GUILD_A, GUILD_B = 7, 8
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VOTED_AT = T0 + timedelta(minutes=1)
CLOSED_AT = T0 + timedelta(minutes=10)
AUTHOR = 40  # whose words the scheduled duel's prompt is
EVERY_KIND = list(DuelVoteKind)


@dataclass(frozen=True)
class World:
    kept: int
    author_out: int
    still_open: int
    other_guild: int


def _duel(
    session: Session, guild_id: int, tag: str, votes: dict[int, str], *, close: bool = True
) -> int:
    """A duel of ``guild_id`` (base generator against a LoRA of the guild) with ``votes``,
    closed at CLOSED_AT unless ``close`` is false."""
    lora = register_model_version(
        session,
        kind=ModelKind.lora,
        name=f"lora-{tag}",
        checkpoint_key=f"lora/{tag}",
        architecture="tiny",
        guild_id=guild_id,
    ).id
    duel = create_duel(
        session,
        guild_id=guild_id,
        channel_id=77,
        prompt=f"a prompt {tag}",
        generator="toy",
        configurations=(lora, None),
        open_seconds=600,
        rng=random.Random(0),
    )
    sha_a, sha_b = (f"{tag}{side}".ljust(64, "0") for side in "ab")
    set_duel_images(
        session, duel.id, DuelImage(sha_a, f"blobs/{sha_a}"), DuelImage(sha_b, f"blobs/{sha_b}")
    )
    open_duel(session, duel.id, 9_000_000 + duel.id, now=T0)
    for user, vote in votes.items():
        assert record_vote(session, duel.id, user, vote, now=VOTED_AT).outcome.counted
    if close:
        assert close_duel(session, duel.id, now=CLOSED_AT) is not None
    return duel.id


def _world(factory: sessionmaker[Session]) -> World:
    """Guild A: a closed duel with every kind of vote (user 15 opts out later), a closed
    duel on AUTHOR's prompt (AUTHOR opts out later), an open duel; guild B: a closed duel."""
    with factory() as session, session.begin():
        kept = _duel(session, GUILD_A, "k", {11: "a", 12: "b", 13: "tie", 14: "both_bad", 15: "a"})
        author_out = _duel(session, GUILD_A, "p", {11: "a"})
        opt_in(session, AUTHOR)  # the author's row, as the human gate finds them
        get_duel(session, author_out).prompt_author_id = AUTHOR
        still_open = _duel(session, GUILD_A, "o", {11: "a"}, close=False)
        other_guild = _duel(session, GUILD_B, "g", {11: "a"})
    return World(kept, author_out, still_open, other_guild)


def _builder_votes(
    session: Session,
    scope: Scope,
    *,
    closed_by: datetime | None = None,
    voted_by: datetime | None = None,
) -> list[tuple[int, int]]:
    """(duel, voter) of every kind of vote the builder returns, in duel then vote order."""
    query = closed_duel_votes(
        scope, kinds=EVERY_KIND, closed_by=closed_by, voted_by=voted_by
    ).order_by(DuelVote.duel_id, DuelVote.id)
    return [(int(row.duel_id), int(row.user_id)) for row in session.execute(query)]


def test_opted_out_voters_and_prompt_authors_open_and_other_guilds_duels_are_left_out(
    factory: sessionmaker[Session],
) -> None:
    world = _world(factory)
    scope = Scope.guild(GUILD_A)
    kept = [(world.kept, user) for user in (11, 12, 13, 14)]
    with factory() as session:
        # Before anyone opts out, both consent-bound votes are there (the open duel and the
        # other guild's never are): what disappears below disappears for consent.
        assert _builder_votes(session, scope) == [*kept, (world.kept, 15), (world.author_out, 11)]
        assert _builder_votes(session, Scope.guild(GUILD_B)) == [(world.other_guild, 11)]
    with factory() as session, session.begin():
        opt_out(session, 15)
        opt_out(session, AUTHOR)
    with factory() as session:
        assert _builder_votes(session, scope) == kept
        # Both callers, through the builder: training sets take the votes for a side,
        # exports a side or a tie; neither takes anything else.
        sets = iter_duel_choice_sets(session, scope=scope, salt="s")
        assert [(s.duel_id, s.user_id) for s in sets] == kept[:2]
        exported = iter_export_duel_votes(session, scope=scope, split_salt="s")
        assert [(v.duel_id, v.user_id) for v in exported] == kept[:3]
        prompt_id = get_duel(session, world.kept).prompt_id
        assert export_duel_votes_per_prompt(session, scope=scope) == {prompt_id: 3}
    with factory() as session, session.begin():
        close_duel(session, world.still_open, now=CLOSED_AT)
    with factory() as session:  # once closed, the open duel's vote counts
        assert _builder_votes(session, scope) == [*kept, (world.still_open, 11)]


def test_the_cutoff_is_on_the_duels_closing_or_on_the_vote(
    factory: sessionmaker[Session],
) -> None:
    world = _world(factory)
    scope = Scope.guild(GUILD_A)
    with factory() as session:
        # Votes cast at VOTED_AT in duels closed at CLOSED_AT: a cutoff between the two
        # keeps them by the vote (exports) and not by the closing (training snapshots).
        between = VOTED_AT + timedelta(minutes=1)
        assert _builder_votes(session, scope, closed_by=between) == []
        assert {duel for duel, _ in _builder_votes(session, scope, voted_by=between)} == {
            world.kept,
            world.author_out,
        }
        assert _builder_votes(session, scope, voted_by=T0) == []
        assert _builder_votes(session, scope, closed_by=CLOSED_AT) == _builder_votes(session, scope)
