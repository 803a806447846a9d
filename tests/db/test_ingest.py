"""Idempotent ingest of generations and choices, on PostgreSQL and on SQLite."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.errors import (
    ConsentRequired,
    InvalidGeneration,
    UnknownGeneration,
    UnknownImage,
    UserOptedOut,
)
from db.ingest import ChoiceIn, record_choice, record_generation
from db.models import (
    Choice,
    ChoiceMethod,
    ConsentMode,
    DiscordUser,
    Generation,
    GuildConfig,
    Image,
    Prompt,
)
from db.privacy import opt_in, opt_out
from tests.factories import make_generation


def count(factory: sessionmaker[Session], model: type) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_same_generation_twice_gives_one_row_each(factory: sessionmaker[Session]) -> None:
    generation = make_generation()
    with factory() as session, session.begin():
        first = record_generation(session, generation)
    with factory() as session, session.begin():
        second = record_generation(session, generation)
    assert first == second
    assert len(first.image_ids) == 4
    assert count(factory, Generation) == 1
    assert count(factory, Image) == 4
    assert count(factory, Prompt) == 1
    assert count(factory, DiscordUser) == 1


def test_prompts_are_deduplicated_after_normalisation(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        a = record_generation(session, make_generation(prompt="A  Red fox\tin the snow "))
        b = record_generation(session, make_generation(prompt="a red fox in the snow"))
    assert a.prompt_id == b.prompt_id
    assert a.generation_id != b.generation_id
    with factory() as session:
        assert session.scalar(select(Prompt.text)) == "A  Red fox\tin the snow "


@pytest.mark.parametrize("rounds", [15])
def test_concurrent_ingest_of_one_generation_from_two_connections(
    factory: sessionmaker[Session], rounds: int
) -> None:
    for round_number in range(rounds):
        generation = make_generation(prompt=f"concurrent prompt {round_number}")
        barrier = threading.Barrier(2)
        results: list[object] = []
        errors: list[BaseException] = []

        def ingest(generation=generation, barrier=barrier, results=results, errors=errors) -> None:
            try:
                with factory() as session:
                    barrier.wait()
                    with session.begin():
                        results.append(record_generation(session, generation))
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=ingest) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert results[0] == results[1]
    assert count(factory, Generation) == rounds
    assert count(factory, Image) == 4 * rounds
    assert count(factory, Prompt) == rounds
    assert count(factory, DiscordUser) == 1


def test_a_changed_pick_replaces_the_earlier_one(factory: sessionmaker[Session]) -> None:
    generation = make_generation()
    with factory() as session, session.begin():
        recorded = record_generation(session, generation)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pick = ChoiceIn(
        user_id=1001,
        position=0,
        method=ChoiceMethod.button,
        generation_message_id=generation.source_message_id,
        at=t0,
    )
    with factory() as session, session.begin():
        first_id = record_choice(session, pick)
    with factory() as session, session.begin():
        second_id = record_choice(
            session,
            ChoiceIn(
                1001, 2, ChoiceMethod.button, recorded.generation_id, at=t0 + timedelta(seconds=5)
            ),
        )
    assert first_id == second_id
    with factory() as session:
        choice = session.scalars(select(Choice)).one()
        assert choice.chosen_image_id == recorded.image_ids[2]
        assert choice.updated_at == t0 + timedelta(seconds=5)
    # The gateway replays the first click after a RESUME: the later pick stands.
    with factory() as session, session.begin():
        record_choice(session, pick)
    with factory() as session:
        assert session.scalars(select(Choice)).one().chosen_image_id == recorded.image_ids[2]
    assert count(factory, Choice) == 1


def test_skip_is_recorded_without_an_image(factory: sessionmaker[Session]) -> None:
    generation = make_generation()
    with factory() as session, session.begin():
        record_generation(session, generation)
        record_choice(
            session,
            ChoiceIn(
                5, None, ChoiceMethod.vote, generation_message_id=generation.source_message_id
            ),
        )
    with factory() as session:
        assert session.scalars(select(Choice)).one().chosen_image_id is None


def test_choice_for_unknown_generation_or_image_is_refused(factory: sessionmaker[Session]) -> None:
    generation = make_generation()
    with factory() as session, session.begin():
        record_generation(session, generation)
    with pytest.raises(UnknownGeneration, match="no generation recorded for message 12345"):
        with factory() as session, session.begin():
            record_choice(
                session, ChoiceIn(5, 0, ChoiceMethod.reaction, generation_message_id=12345)
            )
    with pytest.raises(UnknownImage, match="has no image #9"):
        with factory() as session, session.begin():
            record_choice(
                session,
                ChoiceIn(
                    5, 8, ChoiceMethod.reaction, generation_message_id=generation.source_message_id
                ),
            )
    assert count(factory, Choice) == 0


def test_opted_out_users_generations_and_choices_are_refused(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        opt_out(session, 666)
    with pytest.raises(UserOptedOut, match="user 666 has opted out"):
        with factory() as session, session.begin():
            record_generation(session, make_generation(requester_id=666, prompt="secret prompt"))
    assert count(factory, Generation) == 0
    assert count(factory, Image) == 0
    assert count(factory, Prompt) == 0

    other = make_generation(requester_id=1)
    with factory() as session, session.begin():
        record_generation(session, other)
    with pytest.raises(UserOptedOut), factory() as session, session.begin():
        record_choice(
            session,
            ChoiceIn(666, 1, ChoiceMethod.button, generation_message_id=other.source_message_id),
        )
    assert count(factory, Choice) == 0


def test_opt_in_guilds_store_only_members_who_opted_in(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        session.add(GuildConfig(guild_id=500, consent_mode=ConsentMode.opt_in, admin_role_ids=[]))
    with pytest.raises(ConsentRequired, match="guild 500 harvests only members who opted in"):
        with factory() as session, session.begin():
            record_generation(session, make_generation(requester_id=77, guild_id=500))
    assert count(factory, DiscordUser) == 0
    with factory() as session, session.begin():
        opt_in(session, 77)
        record_generation(session, make_generation(requester_id=77, guild_id=500))
    assert count(factory, Generation) == 1


def test_invalid_generations_are_refused(factory: sessionmaker[Session]) -> None:
    with pytest.raises(InvalidGeneration, match="at least one image"):
        with factory() as session, session.begin():
            record_generation(session, make_generation(seeds=[]))
    with pytest.raises(InvalidGeneration, match="prompt is empty"):
        with factory() as session, session.begin():
            record_generation(session, make_generation(prompt="   "))
    assert count(factory, Generation) == 0
    assert count(factory, DiscordUser) == 0


def test_concurrent_picks_by_one_user_leave_one_choice(factory: sessionmaker[Session]) -> None:
    generation = make_generation()
    with factory() as session, session.begin():
        recorded = record_generation(session, generation)
    for round_number in range(10):
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def pick(position: int, user=300 + round_number, barrier=barrier, errors=errors) -> None:
            try:
                with factory() as session:
                    barrier.wait()
                    with session.begin():
                        record_choice(
                            session,
                            ChoiceIn(
                                user,
                                position,
                                ChoiceMethod.button,
                                recorded.generation_id,
                            ),
                        )
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=pick, args=(p,)) for p in (0, 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
    with factory() as session:
        choices = session.scalars(select(Choice)).all()
    assert len(choices) == 10
    assert {c.chosen_image_id for c in choices} <= {recorded.image_ids[0], recorded.image_ids[3]}
