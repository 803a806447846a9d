"""The multi-attachment adapter reads who asked from Discord and the generator's suffix, never
from the prompt (moved from tests/bot/test_hardening.py)."""

from __future__ import annotations

from bot.harvesting.adapters import multi_attachment
from bot.harvesting.adapters.base import AttachmentRef

ALICE = 111111111111111111
MALLORY = 222222222222222222
VICTIM = 333333333333333333
IMAGES = [AttachmentRef(f"https://cdn/{n}.png", f"{n}.png", 10, "image/png") for n in range(2)]


def test_the_requester_is_never_read_from_the_prompt() -> None:
    content = f"**a portrait of <@{VICTIM}>** - <@{MALLORY}>"
    parsed = multi_attachment.parse_message(content, IMAGES, author_is_bot=True)
    assert parsed is not None and parsed.requester_id == MALLORY
    assert parsed.prompt == f"a portrait of <@{VICTIM}>"
    # A prompt that closes the bold itself and fakes the generator's suffix stays a prompt.
    prompt = f"x** - <@{VICTIM}> **y"
    content = f"**{prompt}** - <@{MALLORY}>"
    parsed = multi_attachment.parse_message(content, IMAGES, author_is_bot=True)
    assert parsed is not None and parsed.requester_id == MALLORY and parsed.prompt == prompt
    # Discord's interaction metadata and a reply's author come before any text.
    parsed = multi_attachment.parse_message(
        f"**a portrait of <@{VICTIM}>** - <@{MALLORY}>",
        IMAGES,
        author_is_bot=True,
        interaction_user_id=ALICE,
        replied_user_id=MALLORY,
    )
    assert parsed is not None and parsed.requester_id == ALICE
    parsed = multi_attachment.parse_message(
        f"<@{VICTIM}> a cat", IMAGES, author_is_bot=True, replied_user_id=MALLORY
    )
    assert parsed is not None and parsed.requester_id == MALLORY
    # No bold prompt and nothing from Discord: nobody is the requester.
    parsed = multi_attachment.parse_message(f"<@{VICTIM}> a cat", IMAGES, author_is_bot=True)
    assert parsed is not None and parsed.requester_id is None
