"""Builders of arena test data: LoRA model versions (rows, and the tiny pipeline's files a
worker loads) and duels with their two images, opened as if the bot had posted them."""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from db.arena import DuelImage, create_duel, open_duel, set_duel_images
from db.ingest import ImageIn
from db.models import Duel, ModelKind
from db.registry import promote_model_version, register_model_version
from db.scope import Scope
from media.store import ImageStore
from tests.factories import next_message_id, stored_planted_set

# Two images no test reads: for duels whose pictures do not matter.
PLACEHOLDER_SIDES = (DuelImage("a" * 64, "blobs/a"), DuelImage("b" * 64, "blobs/b"))


def register_lora(
    session: Session,
    name: str,
    *,
    guild_id: int | None,
    checkpoint_key: str | None = None,
    architecture: str = "tiny",
    activate: bool = False,
) -> int:
    """A LoRA model version of ``guild_id`` (None: global), its checkpoint at
    ``checkpoint_key`` (default ``lora/<name>``); ``activate`` makes it the guild's active
    one. Its id."""
    version = register_model_version(
        session,
        kind=ModelKind.lora,
        name=name,
        checkpoint_key=checkpoint_key or f"lora/{name}",
        architecture=architecture,
        guild_id=guild_id,
    )
    if activate:
        assert guild_id is not None, "a global LoRA is activated for the pool, not a guild"
        promote_model_version(session, version.id, Scope.guild(guild_id))
    return version.id


def save_tiny_loras(models_dir: Path, *folders: str) -> None:
    """The tiny Stable Diffusion's LoRA (seed 0) saved in ``models_dir/lora/<folder>`` for
    each folder: files a worker with ``SD_PIPELINE=tiny`` loads."""
    from hps.diffusion.pipelines import add_lora, build_tiny_pipeline, save_lora

    pipe = build_tiny_pipeline(seed=0)
    add_lora(pipe)
    for folder in folders:
        save_lora(pipe, models_dir / "lora" / folder)


def tiny_sd_lora(
    factory: sessionmaker[Session],
    models_dir: Path,
    guild_id: int,
    name: str,
    *,
    folder: str | None = None,
    activate: bool = False,
) -> int:
    """A LoRA of the tiny Stable Diffusion that a worker can run: its files in
    ``models_dir/lora/<folder>`` (default: the name) and its row in ``guild_id`` (the active
    one there if ``activate``). Its id."""
    folder = folder or name
    save_tiny_loras(models_dir, folder)
    with factory() as session, session.begin():
        return register_lora(
            session,
            name,
            guild_id=guild_id,
            checkpoint_key=f"lora/{folder}",
            architecture="tiny-sd",
            activate=activate,
        )


def duel_sides(images: list[ImageIn]) -> tuple[DuelImage, DuelImage]:
    """Two stored images (``tests.factories``) as a duel's sides A and B."""
    image_a, image_b = images
    return (
        DuelImage(image_a.sha256, image_a.storage_key),
        DuelImage(image_b.sha256, image_b.storage_key),
    )


def stored_duel_sides(
    store: ImageStore, rng: random.Random, preferred: int
) -> tuple[DuelImage, DuelImage]:
    """Two stored planted images (see ``stored_planted_set``); side ``preferred`` (0: A,
    1: B) carries the red disc."""
    return duel_sides(stored_planted_set(store, rng, preferred, size=2))


def make_duel(
    session: Session,
    *,
    guild_id: int,
    configurations: tuple[int | None, int | None],
    opened_at: datetime | None,
    prompt: str = "a lighthouse at dusk",
    channel_id: int = 77,
    generator: str = "toy",
    open_seconds: int = 600,
    max_votes: int | None = None,
    requested_by: int | None = None,
    rng: random.Random | None = None,
    sides: tuple[DuelImage, DuelImage] = PLACEHOLDER_SIDES,
    message_id: int | None = None,
) -> Duel:
    """A duel of ``configurations`` (see ``db.arena.create_duel``). With ``opened_at`` it has
    its ``sides`` and was posted then as ``message_id`` (default: a fresh id); with None it is
    still pending: no images, not posted."""
    duel = create_duel(
        session,
        guild_id=guild_id,
        channel_id=channel_id,
        prompt=prompt,
        generator=generator,
        configurations=configurations,
        open_seconds=open_seconds,
        max_votes=max_votes,
        requested_by=requested_by,
        rng=rng,
    )
    if opened_at is not None:
        set_duel_images(session, duel.id, *sides)
        open_duel(session, duel.id, message_id or next_message_id(), now=opened_at)
    return duel
