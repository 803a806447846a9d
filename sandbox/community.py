"""A simulated community on the emulator: members with hidden preferences, a generator bot
that posts several attachments per prompt (picks are number-emoji reactions), and a
Midjourney-style bot (a 2x2 grid with U1..U4 buttons; a pick is an upscale message
``**<prompt>** - Image #N <@user>`` replying to the grid).

The hidden preference is learnable on purpose: in a ``warm`` community most members like a big
warm disc in the picture (the stronger, the likelier), one contrarian likes cool colours, and
everyone picks with some noise, so a preference model trained on their picks should beat an
untrained one on held-out prompts, as the paper's does on real people.

Several communities can share one emulator, each in a guild of its own
(:meth:`Community.in_new_guild`) with its own taste: in a ``cool`` community most members like
a big cool disc (and one contrarian a warm one). Both tastes feel more strongly about big discs,
but their colours are opposite, so a model trained on one guild's picks is better on that
guild's held-out prompts than the untuned model, than the other guild's model and than one
trained on both guilds' picks pooled: what a model per community is for."""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageDraw

from sandbox.emulator import DiscordEmulator

ADJECTIVES = ["a tiny", "a giant", "an ancient", "a shiny", "a quiet", "a stormy"]
SUBJECTS = ["cat", "lighthouse", "bowl of fruit", "robot", "forest", "city", "boat"]
STYLES = ["at night", "in watercolour", "as a photo", "in the snow", "under neon light"]
NUMBER_EMOJIS = [f"{digit}\ufe0f\u20e3" for digit in range(1, 10)]
TILE = 96
# The channels a community's guild has, by kind (a guild's channel names carry its prefix).
CHANNEL_KINDS = ("generations", "midjourney", "general")
TASTES = ("warm", "cool")


@dataclass(frozen=True)
class Candidate:
    """One generated picture and the features members' tastes read from it."""

    image: Image.Image
    warmth: float  # -1 (cool disc) .. 1 (warm disc), 0 without a disc
    disc_size: float  # 0..1


@dataclass
class Member:
    user_id: int
    name: str
    likes_warm: bool = True
    choosiness: float = 8.0  # higher: picks follow the taste more strictly

    def utility(self, candidate: Candidate) -> float:
        """How much this member likes ``candidate`` (hidden from the platform)."""
        sign = 1.0 if self.likes_warm else -1.0
        return sign * candidate.warmth * (0.5 + candidate.disc_size)

    def pick(self, candidates: list[Candidate], rng: random.Random) -> int:
        """A noisy pick: softmax over the utilities."""
        weights = [math.exp(self.choosiness * self.utility(c)) for c in candidates]
        return rng.choices(range(len(candidates)), weights=weights)[0]


def draw_candidate(rng: random.Random, size: int = TILE) -> Candidate:
    """A picture with muted clutter and (usually) a disc of a random hue and size."""
    background = tuple(rng.randrange(40, 150) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(3, 10)
        color = (rng.randrange(0, 90), rng.randrange(60, 200), rng.randrange(60, 200))
        draw.rectangle((x - r, y - r, x + r, y + r), fill=color)
    if rng.random() < 0.2:
        return Candidate(image, 0.0, 0.0)
    warmth = rng.uniform(-1, 1)
    disc_size = rng.random()
    radius = int(size * (0.1 + 0.25 * disc_size))
    red = int(128 + 127 * warmth)
    blue = int(128 - 127 * warmth)
    cx, cy = rng.randrange(radius, size - radius), rng.randrange(radius, size - radius)
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(red, 40, blue))
    return Candidate(image, warmth, disc_size)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def grid_of(candidates: list[Candidate]) -> Image.Image:
    """Four tiles in a 2x2 grid (row by row), as a Midjourney-style bot posts them."""
    grid = Image.new("RGB", (2 * TILE, 2 * TILE))
    for index, candidate in enumerate(candidates):
        grid.paste(candidate.image, ((index % 2) * TILE, (index // 2) * TILE))
    return grid


@dataclass(frozen=True)
class Round:
    """One generation of a community: the member who asked, the prompt, the pictures and the
    index of the one the member picked."""

    member: Member
    prompt: str
    candidates: list[Candidate]
    choice: int


@dataclass
class Community:
    """Members, an admin and two generator bots in one guild of an emulator (the emulator's
    first guild unless ``guild_id`` says otherwise); ``post_generation`` plays one round.

    ``taste`` is what most members like (``warm`` or ``cool`` discs; the last member is a
    contrarian); ``prefix`` starts the names of the community's channels and people, so that
    several communities can share an emulator (channel names are unique across its guilds)."""

    emulator: DiscordEmulator
    seed: int = 0
    size: int = 6
    taste: str = "warm"
    guild_id: int | None = None
    prefix: str = ""
    members: list[Member] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.taste not in TASTES:
            raise ValueError(f"taste must be one of {TASTES}, not {self.taste!r}")
        if self.guild_id is None:
            self.guild_id = self.emulator.guild_id
        self.rng = random.Random(self.seed)
        # The generator bots are the same users in every guild, as on Discord.
        self.forge = self._bot("ImageForge")
        self.midjourney = self._bot("Midjourney Bot")
        self.admin = self.emulator.add_user(
            f"{self.prefix}moderator", admin=True, guild_id=self.guild_id
        )
        majority_likes_warm = self.taste == "warm"
        for index in range(self.size):
            name = f"{self.prefix}member{index + 1}"
            contrarian = index == self.size - 1
            likes_warm = majority_likes_warm != contrarian
            self.members.append(Member(self.emulator.add_user(name), name, likes_warm))

    @classmethod
    async def in_new_guild(
        cls,
        emulator: DiscordEmulator,
        name: str,
        *,
        taste: str,
        prefix: str,
        seed: int = 0,
        size: int = 6,
    ) -> Community:
        """A community in a guild added to ``emulator`` for it, with the channels
        ``<prefix>generations``, ``<prefix>midjourney`` and ``<prefix>general``."""
        if not prefix:
            raise ValueError("a community in a new guild needs a prefix (channel names are unique)")
        guild_id = await emulator.add_guild(name, tuple(prefix + kind for kind in CHANNEL_KINDS))
        return cls(emulator, seed=seed, size=size, taste=taste, guild_id=guild_id, prefix=prefix)

    def channel(self, kind: str) -> str:
        """The name of this community's ``generations``, ``midjourney`` or ``general`` channel."""
        if kind not in CHANNEL_KINDS:
            raise ValueError(f"no {kind!r} channel: one of {CHANNEL_KINDS}")
        return self.prefix + kind

    def _bot(self, name: str) -> int:
        for user_id, user in self.emulator.users.items():
            if user.get("bot") and user.get("username") == name:
                return user_id
        return self.emulator.add_user(name, bot=True)

    def prompt(self) -> str:
        adjective, subject = self.rng.choice(ADJECTIVES), self.rng.choice(SUBJECTS)
        return f"{adjective} {subject} {self.rng.choice(STYLES)}"

    def play_round(self, images: int = 4) -> Round:
        """One round without Discord: who asks, the prompt, the pictures, the pick."""
        member = self.rng.choice(self.members)
        prompt = self.prompt()
        candidates = [draw_candidate(self.rng) for _ in range(images)]
        return Round(member, prompt, candidates, member.pick(candidates, self.rng))

    async def post_generation(self, channel: str, adapter: str) -> dict[str, Any]:
        """A member asks a generator for a prompt and picks the image they like best."""
        played = self.play_round()
        member, prompt, candidates, choice = (
            played.member,
            played.prompt,
            played.candidates,
            played.choice,
        )
        if adapter == "midjourney":
            grid = await self._midjourney(channel, member, prompt, candidates, choice)
            message = grid
        else:
            message = await self.emulator.inject_message(
                channel,
                self.forge,
                f"**{prompt}** - <@{member.user_id}>",
                [(f"{n + 1}.png", png(c.image), "image/png") for n, c in enumerate(candidates)],
            )
            await self.emulator.inject_reaction(member.user_id, message, NUMBER_EMOJIS[choice])
        round_ = {"message": message, "member": member, "prompt": prompt, "choice": choice}
        self.posted.append(round_)
        return round_

    async def _midjourney(
        self,
        channel: str,
        member: Member,
        prompt: str,
        candidates: list[Candidate],
        choice: int,
    ) -> dict[str, Any]:
        buttons = [
            {
                "type": 1,
                "components": [
                    {
                        "type": 2,
                        "style": 2,
                        "label": f"U{n}",
                        "custom_id": f"MJ::JOB::upsample::{n}::{self.rng.getrandbits(32):08x}",
                    }
                    for n in range(1, 5)
                ],
            }
        ]
        grid = await self.emulator.inject_message(
            channel,
            self.midjourney,
            f"**{prompt}** - <@{member.user_id}> (fast)",
            [("grid.png", png(grid_of(candidates)), "image/png")],
            components=buttons,
        )
        # The member presses U<n>; the generator answers with the upscaled image.
        upscaled = candidates[choice].image.resize((2 * TILE, 2 * TILE))
        await self.emulator.inject_message(
            channel,
            self.midjourney,
            f"**{prompt}** - Image #{choice + 1} <@{member.user_id}>",
            [("upscaled.png", png(upscaled), "image/png")],
            reply_to=grid,
        )
        return grid
