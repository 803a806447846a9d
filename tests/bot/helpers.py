"""What the bot tests share: test images, waiting for a condition, counting rows, posting a
generator's message and an admin's command to the emulator."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from typing import Any

from PIL import Image
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Choice, OutboxMessage
from db.models import Image as ImageRow
from sandbox.emulator import DiscordEmulator


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((80, 60), 50).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def score_options(prompt: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "score",
            "type": 1,
            "options": [
                {"name": "image", "type": 11, "value": 0},
                {"name": "prompt", "type": 3, "value": prompt},
            ],
        }
    ]


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


async def delivered_outbox(
    factory: sessionmaker[Session], kind: str, timeout: float = 15.0
) -> list[OutboxMessage]:
    """The outbox rows of ``kind`` once every one is stamped delivered. The emulator shows a
    post as soon as Discord would, before the bot commits its ``delivered_at``: wait for it."""

    def rows() -> list[OutboxMessage]:
        with factory() as session:
            return list(
                session.scalars(select(OutboxMessage).where(OutboxMessage.kind == kind)).all()
            )

    await eventually(lambda: all(row.delivered_at is not None for row in rows()), timeout)
    return rows()


def count(factory: sessionmaker[Session], model: type, *conditions: Any) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*conditions)) or 0)


def _picked_position(factory: sessionmaker[Session]) -> int | None:
    with factory() as session:
        choice = session.scalars(select(Choice)).one_or_none()
        if choice is None or choice.chosen_image_id is None:
            return None
        return session.get_one(ImageRow, choice.chosen_image_id).position


def admin_call(name: str, **options: Any) -> list[dict[str, Any]]:
    types = {
        "channel": 7,
        "adapter": 3,
        "version_id": 4,
        "force": 5,
        "from_start": 5,
        "limit": 4,
        "licence": 3,
        "prompts": 4,
    }
    sub = [{"name": key, "type": types[key], "value": value} for key, value in options.items()]
    return [{"name": "admin", "type": 2, "options": [{"name": name, "type": 1, "options": sub}]}]


def post_generation(
    emulator: DiscordEmulator,
    channel: str,
    generator: int,
    user: int,
    prompt: str,
    seed: int,
    *,
    dispatch: bool = True,
) -> Any:
    colors = [(seed * 40 % 256, 10 * k, 200 - seed) for k in range(3)]
    return emulator.inject_message(
        channel,
        generator,
        f"**{prompt}** - <@{user}>",
        [(f"{k}.png", png(color), "image/png") for k, color in enumerate(colors)],
        dispatch=dispatch,
    )
