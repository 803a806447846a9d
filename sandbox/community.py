"""A simulated community on the emulator: members with hidden preferences, a generator bot
that posts several attachments per prompt (picks are number-emoji reactions), and a
Midjourney-style bot (a 2x2 grid with U1..U4 buttons; a pick is an upscale message
``**<prompt>** - Image #N <@user>`` replying to the grid). Members also vote in the bot's blind
arena duels (:meth:`Community.vote_in_duel`: they click **A**, **B**, **tie** or **both bad**
under the posted duel, as a person would) by a hidden :class:`DuelTaste`.

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
picks pooled: what a model per community is for.

In an arena duel a member votes by a :class:`DuelTaste`: :class:`ContentTaste` is blind and
reads the two posted pictures with the member's own hidden utility (the figure's size), so a
community whose taste an adapted model learned prefers it without knowing which side it is on;
:class:`ConfigurationTaste` favours one model configuration with a fixed probability and looks
up which side it is on in the database: the simulation's ground truth (no real member can), for
tests whose two configurations do not draw reliably different pictures. A community that cannot
tell two configurations apart is a :class:`ConfigurationTaste` with ``p = 0.5``, or a
:class:`ContentTaste` shown identical pictures (it votes tie)."""

from __future__ import annotations

import asyncio
import io
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from hps.diffusion import toy_corpus
from sandbox.emulator import DiscordEmulator

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

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
        self.ballot_rng = random.Random(f"{self.seed}-ballots")  # the members' duel votes
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

    async def vote_in_duel(
        self,
        message: dict[str, Any],
        taste: DuelTaste,
        voters: Sequence[Member] | None = None,
    ) -> list[Ballot]:
        """The members (or ``voters``) look at a posted duel and click A, B, tie or both bad
        as ``taste`` says, each once (see :func:`cast_votes`); their ballots with the bot's
        answers."""
        chosen = list(self.members if voters is None else voters)
        return await cast_votes(self.emulator, message, chosen, taste, self.ballot_rng)

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


# -- arena duels: members vote A, B, tie or both bad under the bot's blind duels ---------------
DUEL_VOTES = ("a", "b", "tie", "both_bad")
TIE_MARGIN = 0.005  # figure sizes closer than this (a share of the picture) look the same


@dataclass(frozen=True)
class PostedDuel:
    """A duel as a member sees it in the channel: the message, the duel id its buttons carry
    (``hps:duel:<id>:<vote>``), and the two pictures, A and B."""

    message: dict[str, Any]
    duel_id: int
    image_a: Image.Image
    image_b: Image.Image


def duel_id_of(message: dict[str, Any]) -> int | None:
    """The duel id in a message's vote buttons; None for a message without them (any other
    message, or a revealed duel: the reveal removes the buttons)."""
    from bot.arena import CUSTOM_ID

    for row in message.get("components") or []:
        for button in row.get("components") or []:
            match = CUSTOM_ID.fullmatch(str(button.get("custom_id", "")))
            if match:
                return int(match["duel_id"])
    return None


def duel_messages(emulator: DiscordEmulator, channel: str) -> list[dict[str, Any]]:
    """The open duels posted in ``channel`` (messages with vote buttons), oldest first."""
    messages = emulator.messages[emulator.channels[channel]]
    return [messages[key] for key in sorted(messages) if duel_id_of(messages[key]) is not None]


def attachment_image(emulator: DiscordEmulator, attachment: dict[str, Any]) -> Image.Image:
    """The picture behind an attachment, as a client downloads it from the emulator's CDN
    (``/cdn/attachments/<key>/<filename>``)."""
    key = urlparse(str(attachment["url"])).path.split("/")[-2]
    data, _content_type = emulator.files[key]
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def see_duel(emulator: DiscordEmulator, message: dict[str, Any]) -> PostedDuel:
    """What a member sees of a posted duel: its pictures ``A.png`` and ``B.png``."""
    duel_id = duel_id_of(message)
    if duel_id is None:
        raise ValueError(f"message {message.get('id')} is not an open duel")
    files = {a["filename"]: a for a in message.get("attachments", [])}
    return PostedDuel(
        message,
        duel_id,
        attachment_image(emulator, files["A.png"]),
        attachment_image(emulator, files["B.png"]),
    )


class DuelTaste(Protocol):
    """How a member votes in a duel: ``"a"``, ``"b"``, ``"tie"`` or ``"both_bad"``."""

    def vote(self, member: Member, duel: PostedDuel, rng: random.Random) -> str: ...


@dataclass(frozen=True)
class ContentTaste:
    """A blind vote on the pictures: each member judges both with their own hidden utility
    (:meth:`Member.utility`: the figure's size, liked big or small) and picks the one they like
    more with the probability of a two-way softmax (the member's ``choosiness``); pictures that
    look the same (sizes within ``tie_margin``) are a tie, two pictures without a figure are
    both bad. The member never learns which model drew which side."""

    tie_margin: float = TIE_MARGIN

    def vote(self, member: Member, duel: PostedDuel, rng: random.Random) -> str:
        """The member's vote on the two pictures."""
        a, b = measure(duel.image_a), measure(duel.image_b)
        if a.figure_size == 0.0 and b.figure_size == 0.0:
            return "both_bad"
        if abs(a.figure_size - b.figure_size) < self.tie_margin:
            return "tie"
        gap = member.utility(a) - member.utility(b)
        p_a = 1.0 / (1.0 + math.exp(-member.choosiness * gap))
        return "a" if rng.random() < p_a else "b"


@dataclass(frozen=True)
class ConfigurationTaste:
    """A community that likes one model configuration: each vote goes to the side drawn by
    ``favoured`` (a model version id; None: the base generator) with probability ``p``, else
    to the other side. Which side that is comes from the duel's row in the database: the
    simulation's ground truth, which no real member has (the message is blinded). With
    ``p = 0.5``, or a duel without ``favoured``, the vote is a coin flip: a community that
    cannot tell the configurations apart. One draw of the member's stream per vote."""

    sessions: sessionmaker[Session]
    favoured: int | None
    p: float = 0.8

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be a probability, not {self.p}")

    def sides(self, duel_id: int) -> tuple[int | None, int | None]:
        """The configurations of sides A and B (the ground truth)."""
        from db.models import Duel

        with self.sessions() as session:
            duel = session.get(Duel, duel_id)
            if duel is None:
                raise ValueError(f"no duel {duel_id}")
            return duel.version_a_id, duel.version_b_id

    def vote(self, member: Member, duel: PostedDuel, rng: random.Random) -> str:
        """A for the favoured side with probability ``p``."""
        side_a, side_b = self.sides(duel.duel_id)
        draw = rng.random()
        if self.favoured not in (side_a, side_b):
            return "a" if draw < 0.5 else "b"
        liked, other = ("a", "b") if side_a == self.favoured else ("b", "a")
        return liked if draw < self.p else other


@dataclass(frozen=True)
class Ballot:
    """One member's vote in a duel and the bot's private answer to the click."""

    member: Member
    duel_id: int
    vote: str
    answer: str


def duel_button(message: dict[str, Any], vote: str) -> str:
    """The custom_id of the button for ``vote`` on a posted duel."""
    duel_id = duel_id_of(message)
    for row in message.get("components") or []:
        for button in row.get("components") or []:
            custom_id = str(button.get("custom_id", ""))
            if duel_id is not None and custom_id == f"hps:duel:{duel_id}:{vote}":
                return custom_id
    raise ValueError(f"no {vote!r} button on message {message.get('id')}")


async def click_answer(
    emulator: DiscordEmulator,
    user_id: int,
    message: dict[str, Any],
    custom_id: str,
    timeout: float = 60.0,
) -> str:
    """``user_id`` clicks a button and waits for the bot's answer (its last word on the
    interaction). TimeoutError when none comes in ``timeout`` seconds."""
    token = await emulator.click_button(user_id, message, custom_id)
    record = emulator.interactions[token]
    deadline = time.monotonic() + timeout
    while not record.edits:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer to the click on {custom_id} in {timeout:.0f} s")
        await asyncio.sleep(0.02)
    return record.edits[-1]


NOT_OPEN_RETRY_S = 30.0  # how long a member keeps trying a duel the bot has not opened yet


async def _click_until_open(
    emulator: DiscordEmulator, member: Member, message: dict[str, Any], vote: str
) -> str:
    """Click ``vote``; while the bot answers that the duel is not open yet (it opens a duel
    just after posting it), click again a moment later, as a person would."""
    from bot.arena import ANSWERS
    from db.arena import VoteOutcome

    custom_id = duel_button(message, vote)
    deadline = time.monotonic() + NOT_OPEN_RETRY_S
    while True:
        answer = await click_answer(emulator, member.user_id, message, custom_id)
        if answer != ANSWERS[VoteOutcome.not_open] or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


async def cast_votes(
    emulator: DiscordEmulator,
    message: dict[str, Any],
    voters: Sequence[Member],
    taste: DuelTaste,
    rng: random.Random,
) -> list[Ballot]:
    """Each of ``voters`` looks at the posted duel, makes up their mind by ``taste`` (one
    after the other, from ``rng``), then clicks that button and reads the bot's answer."""

    def decide() -> tuple[int, list[str]]:
        duel = see_duel(emulator, message)
        return duel.duel_id, [taste.vote(member, duel, rng) for member in voters]

    duel_id, votes = await asyncio.to_thread(decide)
    ballots = []
    for member, vote in zip(voters, votes, strict=True):
        answer = await _click_until_open(emulator, member, message, vote)
        ballots.append(Ballot(member, duel_id, vote, answer))
    return ballots


async def vote_in_posted_duels(
    community: Community,
    channel: str,
    taste: DuelTaste,
    count: int,
    timeout: float = 300.0,
) -> list[Ballot]:
    """Every member of ``community`` votes by ``taste`` in each duel the bot posts in
    ``channel`` (duels side by side, each as soon as it appears) until ``count`` duels were
    posted; every ballot, once all are answered. TimeoutError when fewer than ``count`` are
    posted within ``timeout`` seconds."""
    messages = community.emulator.messages[community.emulator.channels[channel]]
    seen: set[int] = set()
    voting: list[asyncio.Task[list[Ballot]]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < count:
            for message in list(messages.values()):
                duel_id = duel_id_of(message)
                if duel_id is not None and duel_id not in seen:
                    seen.add(duel_id)
                    voting.append(asyncio.create_task(community.vote_in_duel(message, taste)))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(seen)} of {count} duels were posted in {timeout:.0f} s")
            await asyncio.sleep(0.05)
        done = await asyncio.gather(*voting)
    finally:
        for task in voting:
            task.cancel()
    return [ballot for ballots in done for ballot in ballots]
