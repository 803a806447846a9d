"""Adapters are registered by name from their modules; each reads plain message fields."""

from __future__ import annotations

from bot.harvesting.adapters import (
    ADAPTER_CHOICES,
    REGISTRY,
    adapter_named,
    midjourney,
    multi_attachment,
    reaction_may_pick,
)
from bot.harvesting.adapters.base import (
    AttachmentRef,
    GeneratorMessage,
    ParsedChoice,
    ParsedGeneration,
)
from db.models import ChoiceMethod

USER = 222222222222222222
IMAGES = [AttachmentRef(f"https://cdn/{n}.png", f"{n}.png", 10, "image/png") for n in range(2)]


def test_every_adapter_module_is_registered_under_its_name() -> None:
    assert set(REGISTRY) == {"multi_attachment", "midjourney"}
    assert [choice.value for choice in ADAPTER_CHOICES] == sorted(REGISTRY)
    assert adapter_named("midjourney") is midjourney.ADAPTER
    assert adapter_named("multi_attachment") is multi_attachment.ADAPTER
    assert adapter_named("unknown") is None and adapter_named(None) is None


def test_only_number_emojis_may_pick() -> None:
    assert reaction_may_pick("1\ufe0f\u20e3") and reaction_may_pick("\U0001f51f")
    assert not reaction_may_pick("\U0001f44d")
    assert multi_attachment.ADAPTER.picks_by_reaction
    assert multi_attachment.ADAPTER.reaction_position("2\ufe0f\u20e3") == 1
    assert not midjourney.ADAPTER.picks_by_reaction
    assert midjourney.ADAPTER.reaction_position("2\ufe0f\u20e3") is None


def test_midjourney_reads_an_upscale_as_a_pick_and_a_grid_as_a_generation() -> None:
    upscale = GeneratorMessage(
        message_id=5,
        content=f"**a cat** - Image #3 <@{USER}>",
        attachments=[IMAGES[0]],
        author_is_bot=True,
        referenced_message_id=4,
    )
    choice = midjourney.ADAPTER.read(upscale)
    assert choice == ParsedChoice(4, USER, 2, choice_message_id=5, method=ChoiceMethod.upscale)
    grid = GeneratorMessage(
        message_id=4,
        content=f"**a cat** - <@{USER}> (fast)",
        attachments=[IMAGES[0]],
        author_is_bot=True,
    )
    parsed = midjourney.ADAPTER.read(grid)
    assert isinstance(parsed, ParsedGeneration) and parsed.split_grid
    assert parsed.requester_id == USER and parsed.prompt == "a cat"


def test_multi_attachment_reads_a_generation_and_ignores_people() -> None:
    message = GeneratorMessage(
        message_id=7,
        content="**a dog**",
        attachments=IMAGES,
        author_is_bot=True,
        replied_user_id=USER,
    )
    parsed = multi_attachment.ADAPTER.read(message)
    assert isinstance(parsed, ParsedGeneration) and not parsed.split_grid
    assert parsed.requester_id == USER and len(parsed.attachments) == 2
    human = GeneratorMessage(
        message_id=8, content="**a dog**", attachments=IMAGES, author_is_bot=False
    )
    assert multi_attachment.ADAPTER.read(human) is None
