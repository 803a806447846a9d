"""A generated community for export/import tests: prompts with several images each, picks,
one skip, a user who opted out, a requester who opted out and a user who was forgotten."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.ingest import ChoiceIn, GenerationIn, record_choice, record_generation
from db.models import (
    Choice,
    ChoiceMethod,
    ConsentMode,
    DiscordUser,
    Generation,
    GuildConfig,
    Image,
    Prompt,
    Sharing,
)
from db.privacy import forget_user_everywhere, opt_out
from media.store import LocalImageStore
from tests.conftest import TABLES
from tests.factories import stored_images

SPLIT_SALT = "exchange-test-split"
USER_SALT = "exchange-test-user-salt"
GUILD = 7
CHANNEL = 99
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)

VOTERS = (101, 102, 103)
OPTED_OUT_VOTER = 201
OPTED_OUT_REQUESTER = 202
FORGOTTEN = 301


@dataclass
class Community:
    """What was built and what an export must contain."""

    store: LocalImageStore
    prompts: set[str] = field(default_factory=set)
    hidden_prompts: set[str] = field(default_factory=set)
    generations: int = 0
    images: int = 0
    picks: int = 0
    skips: int = 0
    users: set[int] = field(default_factory=set)

    @property
    def choices(self) -> int:
        return self.picks + self.skips


def counts(factory: sessionmaker[Session]) -> dict[str, int]:
    """Row counts of the tables an import fills."""
    with factory() as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(model)) or 0)
            for name, model in (
                ("prompts", Prompt),
                ("generations", Generation),
                ("images", Image),
                ("choices", Choice),
                ("users", DiscordUser),
            )
        }


def empty_database(factory: sessionmaker[Session]) -> None:
    """Remove every row (the schema stays)."""
    with factory() as session, session.begin():
        session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


def build_community(
    factory: sessionmaker[Session], store: LocalImageStore, *, prompts: int = 30
) -> Community:
    """``prompts`` prompts with one or two generations of 2-4 images; picks by three voters,
    one skip; then an opted-out voter, a generation by a requester who opted out, and a
    forgotten user (who both requested a generation and voted)."""
    rng = random.Random(5)
    community = Community(store)
    seed = 0
    with factory() as session, session.begin():
        # Pooled: the operators' exports (the default, without a guild) hold it.
        session.add(
            GuildConfig(guild_id=GUILD, consent_mode=ConsentMode.opt_out, sharing=Sharing.pooled)
        )
        session.flush()
        for number in range(prompts):
            prompt = f"a watercolour of landmark number {number}"
            for repeat in range(1 + (number % 3 == 0)):
                size = 2 + (number + repeat) % 3
                seeds = list(range(seed, seed + size))
                seed += size
                recorded = record_generation(
                    session,
                    GenerationIn(
                        source_message_id=1_300_000_000_000_000_000 + seed,
                        channel_id=CHANNEL,
                        guild_id=GUILD,
                        prompt=prompt,
                        generator="sdxl-test" if number % 2 else "midjourney-test",
                        images=stored_images(store, seeds),
                        requester_id=VOTERS[number % 3],
                        created_at=T0,
                    ),
                )
                community.prompts.add(prompt)
                community.generations += 1
                community.images += size
                for offset, voter in enumerate(VOTERS[: 1 + (number + repeat) % 3]):
                    position: int | None = rng.randrange(size)
                    if number == 4 and voter == VOTERS[0]:
                        position = None  # one skip
                    record_choice(
                        session,
                        ChoiceIn(
                            voter,
                            position,
                            ChoiceMethod.button,
                            recorded.generation_id,
                            at=T0 + timedelta(minutes=number, seconds=offset),
                        ),
                    )
                    community.users.add(voter)
                    if position is None:
                        community.skips += 1
                    else:
                        community.picks += 1
                # The voter who opts out later and the user who is forgotten later.
                for outsider in (OPTED_OUT_VOTER, FORGOTTEN):
                    record_choice(
                        session,
                        ChoiceIn(outsider, 0, ChoiceMethod.reaction, recorded.generation_id, at=T0),
                    )
        for requester, prompt in (
            (OPTED_OUT_REQUESTER, "a private prompt of someone who opted out"),
            (FORGOTTEN, "a private prompt of someone who was forgotten"),
        ):
            recorded = record_generation(
                session,
                GenerationIn(
                    source_message_id=1_300_000_000_000_100_000 + requester,
                    channel_id=CHANNEL,
                    guild_id=GUILD,
                    prompt=prompt,
                    generator="sdxl-test",
                    images=stored_images(store, [10_000 + requester, 20_000 + requester]),
                    requester_id=requester,
                ),
            )
            record_choice(
                session, ChoiceIn(VOTERS[0], 1, ChoiceMethod.button, recorded.generation_id)
            )
            community.hidden_prompts.add(prompt)
        opt_out(session, OPTED_OUT_VOTER)
        opt_out(session, OPTED_OUT_REQUESTER)
    forget_user_everywhere(factory, store, FORGOTTEN)
    return community


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path / "images")


@pytest.fixture
def community(pg_factory: sessionmaker[Session], store: LocalImageStore) -> Community:
    return build_community(pg_factory, store)
