"""Forget-me, opt-out and deletion by message id leave nothing of the user behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.ingest import ChoiceIn, record_choice, record_generation
from db.jobs import create_job, finish_job
from db.models import (
    Base,
    Choice,
    ChoiceMethod,
    DiscordUser,
    Generation,
    Image,
    Job,
    ModelKind,
    ModelVersion,
    OutboxMessage,
    Score,
)
from db.privacy import (
    delete_by_message_ids,
    forget_user_everywhere,
    is_opted_out,
    purge_orphan_blobs,
)
from media.store import LocalImageStore
from tests.factories import make_generation

ALICE, BOB = 101, 202


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path / "blobs")


def rows_mentioning(session: Session, user_id: int) -> dict[str, int]:
    """Every row that refers to ``user_id`` in any column of any table."""
    found: dict[str, int] = {}
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if column.type.python_type is not int:
                continue
            n = session.scalar(select(func.count()).select_from(table).where(column == user_id))
            if n:
                found[f"{table.name}.{column.name}"] = int(n)
    return found


def test_forget_user_leaves_no_row_or_blob(
    factory: sessionmaker[Session], store: LocalImageStore
) -> None:
    alice_gen = make_generation(requester_id=ALICE, seeds=[1, 2, 3, 4], store=store)
    shared_gen = make_generation(requester_id=BOB, seeds=[4, 5, 6, 7], store=store)  # seed 4 shared
    with factory() as session, session.begin():
        alice_ids = record_generation(session, alice_gen)
        bob_ids = record_generation(session, shared_gen)
        record_choice(session, ChoiceIn(BOB, 1, ChoiceMethod.button, alice_ids.generation_id))
        record_choice(session, ChoiceIn(ALICE, 2, ChoiceMethod.button, bob_ids.generation_id))
        model = ModelVersion(kind=ModelKind.hps, name="v1", checkpoint_key="k", architecture="tiny")
        session.add(model)
        session.flush()
        session.add_all(
            [Score(image_id=i, model_version_id=model.id, score=20.0) for i in alice_ids.image_ids]
        )
        job = create_job(session, "score", {"prompt": "x"}, requested_by=ALICE, channel_id=9)
        finish_job(session, job.id, {"score": 21.5})

    removed = forget_user_everywhere(factory, store, ALICE)

    with factory() as session:
        assert rows_mentioning(session, ALICE) == {}
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert session.scalar(select(func.count()).select_from(Score)) == 0
        # Bob's generation stays; Alice's pick in it is gone, Bob's rows untouched.
        assert session.scalar(select(func.count()).select_from(Generation)) == 1
        assert session.scalar(select(func.count()).select_from(Choice)) == 0
        assert session.scalar(select(func.count()).select_from(Image)) == 4
    assert removed == 3
    for image in alice_gen.images[:3]:
        assert not store.exists(image.sha256)
    for image in shared_gen.images:  # includes the blob Alice's set shared with Bob's
        assert store.exists(image.sha256)


def test_forget_with_keep_opt_out_leaves_only_the_marker(
    factory: sessionmaker[Session], store: LocalImageStore
) -> None:
    with factory() as session, session.begin():
        record_generation(session, make_generation(requester_id=ALICE, store=store))
    forget_user_everywhere(factory, store, ALICE, keep_opt_out=True)
    with factory() as session:
        assert is_opted_out(session, ALICE)
        user = session.get(DiscordUser, ALICE)
        assert user is not None and user.opted_out_at is not None
        assert rows_mentioning(session, ALICE) == {"discord_users.id": 1}


def test_deleting_messages_removes_generations_and_upscale_choices(
    factory: sessionmaker[Session], store: LocalImageStore
) -> None:
    grid = make_generation(requester_id=ALICE, store=store)
    with factory() as session, session.begin():
        recorded = record_generation(session, grid)
        record_choice(
            session,
            ChoiceIn(ALICE, 3, ChoiceMethod.upscale, recorded.generation_id, choice_message_id=555),
        )
        record_choice(session, ChoiceIn(BOB, 0, ChoiceMethod.reaction, recorded.generation_id))
    # The upscale message is deleted: only that choice goes.
    with factory() as session, session.begin():
        assert delete_by_message_ids(session, [555]) == []
    with factory() as session:
        assert session.scalars(select(Choice.user_id)).all() == [BOB]
    # The grid message is deleted: the generation, its images, choices and blobs go.
    with factory() as session, session.begin():
        orphans = delete_by_message_ids(session, [grid.source_message_id, 999])
    assert sorted(orphans) == sorted(image.sha256 for image in grid.images)
    assert purge_orphan_blobs(factory, store, orphans) == 4
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Generation)) == 0
        assert session.scalar(select(func.count()).select_from(Choice)) == 0
    # Replayed delete event: harmless.
    with factory() as session, session.begin():
        assert delete_by_message_ids(session, [grid.source_message_id]) == []


def test_purge_keeps_a_blob_that_was_ingested_again(
    factory: sessionmaker[Session], store: LocalImageStore
) -> None:
    first = make_generation(requester_id=ALICE, store=store, seeds=[11, 12])
    with factory() as session, session.begin():
        record_generation(session, first)
    with factory() as session, session.begin():
        orphans = delete_by_message_ids(session, [first.source_message_id])
    # Before the purge runs, the same bytes arrive again in a new generation.
    with factory() as session, session.begin():
        record_generation(session, make_generation(requester_id=BOB, store=store, seeds=[11]))
    assert purge_orphan_blobs(factory, store, orphans) == 1
    assert store.exists(first.images[0].sha256)
    assert not store.exists(first.images[1].sha256)


def test_re_enabling_a_channel_forgets_where_harvesting_stopped(
    pg_factory: sessionmaker[Session],
) -> None:
    from db.channels import advance_last_seen, disable_channel, enable_channel, last_seen_message

    with pg_factory() as session, session.begin():
        enable_channel(session, 1, 10, "multi_attachment")
        advance_last_seen(session, {10: 500})
        advance_last_seen(session, {10: 400})  # never backwards
    with pg_factory() as session, session.begin():
        assert last_seen_message(session, 10) == 500
        enable_channel(session, 1, 10, "midjourney")  # still enabled: the place is kept
    with pg_factory() as session, session.begin():
        assert last_seen_message(session, 10) == 500
        disable_channel(session, 10)
    with pg_factory() as session, session.begin():
        enable_channel(session, 1, 10, "multi_attachment")  # what came meanwhile is not taken
    with pg_factory() as session:
        assert last_seen_message(session, 10) is None
