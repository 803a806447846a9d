"""A simulated community on the emulator: members with hidden preferences, a generator bot
that posts several attachments per prompt (picks are number-emoji reactions), and a
Midjourney-style bot (a 2x2 grid with U1..U4 buttons; a pick is an upscale message
``**<prompt>** - Image #N <@user>`` replying to the grid).

The generator bots post what the product's own small generator draws: the ``toy`` Stable
Diffusion pipeline (:mod:`hps.diffusion.toy`), prompts from its vocabulary ("a large red
circle on a white background"), one seed per image. So the pictures the community picked and
the ones an adapted model regenerates come from the same generator and compare fairly.

The hidden preference is learnable on purpose and read from the pixels: the figure's size,
the share of the picture it covers (:func:`hps.diffusion.toy_corpus.figure_mask`), which varies
a lot between the seeds of one prompt. In a ``big`` community most members like big figures
(the bigger, the likelier), one contrarian small ones, and everyone picks with some noise, so a
preference model trained on their picks should beat an untrained one on held-out prompts, as
the paper's does on real people, and an adaptation from their picks can make the generator
draw what they like.

Several communities can share one emulator, each in a guild of its own
(:meth:`Community.in_new_guild`) with its own taste: in a ``small`` community most members
like small figures (and one contrarian big ones). Their picks among the same four pictures are
opposite, so a model trained on one guild's picks is better on that guild's held-out prompts
than the untuned model, than the other guild's model and than one trained on both guilds'
picks pooled: what a model per community is for."""

from __future__ import annotations

import asyncio
import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from hps.diffusion import toy_corpus
from sandbox.emulator import DiscordEmulator

NUMBER_EMOJIS = [f"{digit}\ufe0f\u20e3" for digit in range(1, 10)]
TILE = toy_corpus.IMAGE_SIZE  # the toy generator's pictures: 32x32
# The channels a community's guild has, by kind (a guild's channel names carry its prefix).
CHANNEL_KINDS = ("generations", "midjourney", "general")
TASTES = ("big", "small")
GENERATOR = "toy"  # the pipeline the community's generator bots run (and the demo's worker)
GENERATION_STEPS = 10  # denoising steps of the community's generator
# Its guidance: lower than Stable Diffusion's 7.5, so the pictures of one prompt vary more (in
# the figure's size, what members' tastes read) while still following the prompt.
GENERATION_GUIDANCE = 4.0
IMAGES_PER_POST = 4

# Draws one picture per seed for a prompt (the community's generator).
Painter = Callable[[str, list[int]], list[Image.Image]]


@dataclass(frozen=True)
class Candidate:
    """One generated picture and the feature members' tastes read from it."""

    image: Image.Image
    figure_size: float  # 0..1: the share of the picture the figure covers


def measure(image: Image.Image) -> Candidate:
    """The picture with its figure's size measured from its pixels (the share of them
    :func:`~hps.diffusion.toy_corpus.figure_mask` finds; 0 without a figure)."""
    mask = toy_corpus.figure_mask(np.asarray(image.convert("RGB")))
    return Candidate(image, float(mask.mean()) if mask.sum() >= 4 else 0.0)


@dataclass
class Member:
    user_id: int
    name: str
    likes_big: bool = True
    choosiness: float = 20.0  # higher: picks follow the taste more strictly

    def utility(self, candidate: Candidate) -> float:
        """How much this member likes ``candidate`` (hidden from the platform)."""
        return candidate.figure_size if self.likes_big else -candidate.figure_size

    def pick(self, candidates: list[Candidate], rng: random.Random) -> int:
        """A noisy pick: softmax over the utilities."""
        weights = [math.exp(self.choosiness * self.utility(c)) for c in candidates]
        return rng.choices(range(len(candidates)), weights=weights)[0]


def toy_prompts() -> list[str]:
    """What the community asks its generator for: the captions of the toy generator's scenes
    (those it was trained on and the held-out colour+shape pairs alike)."""
    scenes = toy_corpus.scenes(held_out=False) + toy_corpus.scenes(held_out=True)
    return [scene.caption for scene in scenes]


def toy_painter(steps: int = GENERATION_STEPS) -> Painter:
    """The community's generator: the ``toy`` pipeline on the CPU (opened on first use; built
    into its cache folder first if needed, a few minutes)."""
    pipe: Any = None

    def paint(prompt: str, seeds: list[int]) -> list[Image.Image]:
        nonlocal pipe
        from hps.diffusion.pipelines import generate, open_pipeline

        if pipe is None:
            from diffusers.utils import logging as diffusers_logging

            diffusers_logging.disable_progress_bar()  # the demo's terminal shows its own
            pipe = open_pipeline(GENERATOR, "cpu")
        return [
            g.image
            for g in generate(
                pipe, prompt, seeds, steps=steps, guidance_scale=GENERATION_GUIDANCE, batch_size=8
            )
        ]

    return paint


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

    ``taste`` is what most members like (``big`` or ``small`` figures; the last member is a
    contrarian); ``prefix`` starts the names of the community's channels and people, so that
    several communities can share an emulator (channel names are unique across its guilds)."""

    emulator: DiscordEmulator
    seed: int = 0
    size: int = 6
    taste: str = "big"
    guild_id: int | None = None
    prefix: str = ""
    members: list[Member] = field(default_factory=list)
    posted: list[dict[str, Any]] = field(default_factory=list)
    painter: Painter | None = None  # default: the toy pipeline (opened on first use)

    def __post_init__(self) -> None:
        if self.taste not in TASTES:
            raise ValueError(f"taste must be one of {TASTES}, not {self.taste!r}")
        if self.guild_id is None:
            self.guild_id = self.emulator.guild_id
        self.rng = random.Random(self.seed)
        self.prompts = toy_prompts()
        if self.painter is None:
            self.painter = toy_painter()
        # The generator bots are the same users in every guild, as on Discord.
        self.forge = self._bot("ImageForge")
        self.midjourney = self._bot("Midjourney Bot")
        self.admin = self.emulator.add_user(
            f"{self.prefix}moderator", admin=True, guild_id=self.guild_id
        )
        majority_likes_big = self.taste == "big"
        for index in range(self.size):
            name = f"{self.prefix}member{index + 1}"
            contrarian = index == self.size - 1
            likes_big = majority_likes_big != contrarian
            self.members.append(Member(self.emulator.add_user(name), name, likes_big))

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
        painter: Painter | None = None,
    ) -> Community:
        """A community in a guild added to ``emulator`` for it, with the channels
        ``<prefix>generations``, ``<prefix>midjourney`` and ``<prefix>general``."""
        if not prefix:
            raise ValueError("a community in a new guild needs a prefix (channel names are unique)")
        guild_id = await emulator.add_guild(name, tuple(prefix + kind for kind in CHANNEL_KINDS))
        return cls(
            emulator,
            seed=seed,
            size=size,
            taste=taste,
            guild_id=guild_id,
            prefix=prefix,
            painter=painter,
        )

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
        """A prompt from the toy generator's vocabulary."""
        return self.rng.choice(self.prompts)

    def draw(self, images: int = IMAGES_PER_POST) -> tuple[str, list[Candidate]]:
        """A prompt and the generator's pictures for it (one fresh seed each), measured."""
        assert self.painter is not None
        prompt = self.prompt()
        seeds = [self.rng.randrange(2**31) for _ in range(images)]
        return prompt, [measure(image) for image in self.painter(prompt, seeds)]

    def pick_round(self, prompt: str, candidates: list[Candidate]) -> Round:
        """A member of this community asks for ``prompt`` and picks among ``candidates``."""
        member = self.rng.choice(self.members)
        return Round(member, prompt, candidates, member.pick(candidates, self.rng))

    def play_round(self, images: int = IMAGES_PER_POST) -> Round:
        """One round without Discord: who asks, the prompt, the pictures, the pick."""
        prompt, candidates = self.draw(images)
        return self.pick_round(prompt, candidates)

    async def post_generation(self, channel: str, adapter: str) -> dict[str, Any]:
        """A member asks a generator for a prompt and picks the image they like best."""
        played = await asyncio.to_thread(self.play_round)  # the generator runs off the loop
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
