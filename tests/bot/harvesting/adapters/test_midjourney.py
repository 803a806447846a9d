"""The Midjourney adapter reads grids and upscales from its own suffix only (moved from
tests/bot/test_hardening.py)."""

from __future__ import annotations

from bot.harvesting.adapters import midjourney
from bot.harvesting.adapters.base import AttachmentRef, split_generator_text

MALLORY = 222222222222222222
VICTIM = 333333333333333333
IMAGES = [AttachmentRef(f"https://cdn/{n}.png", f"{n}.png", 10, "image/png") for n in range(2)]


def test_midjourney_reads_its_own_suffix_only() -> None:
    grid = [IMAGES[0]]
    content = f"**Image #2 of <@{VICTIM}>** - <@{MALLORY}> (fast)"
    parsed = midjourney.parse_grid(content, grid, author_is_bot=True)
    assert parsed is not None and parsed.requester_id == MALLORY  # a grid, not an upscale
    upscale = midjourney.parse_upscale(
        f"**a cat <@{VICTIM}>** - Image #3 <@{MALLORY}>",
        author_is_bot=True,
        message_id=5,
        referenced_message_id=4,
    )
    assert upscale is not None and (upscale.user_id, upscale.position) == (MALLORY, 2)
    assert split_generator_text("no bold <@1>") == ("no bold", "")
