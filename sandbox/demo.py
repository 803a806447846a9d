"""The offline demo behind ``hps run`` without a Discord token: the whole loop on this machine.

The emulator plays Discord, a simulated community plays the people and the generator bots,
and the real product runs against them: the bot (real discord.py over sockets), a worker
process, an embedded SQLite database, broker and image store in a folder of their own.

The generator bots and the worker draw with the same small Stable Diffusion, ``toy``
(:mod:`hps.diffusion.toy`: 32x32 pictures of one captioned shape, pretrained by the project and
cached). Two guilds with opposite hidden tastes share the bot: in "Generation Lab" most members
like big figures, in "Miniatures" small ones (:mod:`sandbox.community`). The demo
harvests both guilds' picks; each guild's admin runs ``/hps admin train`` there, which trains a
model on that guild's picks only and compares it, on that guild's held-out prompts, with the
global model the guild used until then; ``/hps score`` in each guild then reports the guild's
own model. Then the paper's loop closes in the first guild: its admin runs ``/hps admin adapt``
from the guild's harvested image sets (a LoRA trained on what the guild's model prefers,
judged on held-out prompts: base vs adapted mean HPS with intervals, the win rate, a
side-by-side grid posted to the channel and kept as ``adaptation_grid.png`` in the demo's
folder), promotes the LoRA, and a harvested prompt is regenerated with it. A short arena round
follows: members ask ``/hps arena`` on prompts the guild never harvested (so the LoRA never
trained on them), the bot posts blind duels of the adapted LoRA against the base generator, and
every member votes by their hidden taste on the two pictures (:class:`ContentTaste`: blind);
the leaderboard of the closed duels (Bradley-Terry with ties, bootstrap intervals) is printed
and its chart kept as ``arena_leaderboard.png``. It prints progress and a summary. Nothing
leaves 127.0.0.1 and nothing is downloaded: the global base model is a tiny, randomly
initialised CLIP."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from config import Settings, load_settings
from db.engine import make_engine, make_session_factory
from sandbox.community import (
    GENERATOR,
    Community,
    ContentTaste,
    Painter,
    png,
    toy_painter,
    toy_prompts,
    vote_in_posted_duels,
)
from sandbox.emulator import DiscordEmulator, InteractionRecord

REPLY_TIMEOUT_S = 600.0
BASE_MODEL = "demo-base"
# The demo's guilds: (name, what most members like, channel/user name prefix).
GUILDS = (("Generation Lab", "big", ""), ("Miniatures", "small", "mini-"))
TRAIN_EPOCHS = 15  # each guild's HPS training: ~100 choices, a tiny CLIP
GRID_FILE = "adaptation_grid.png"  # the adaptation's side-by-side grid, in the demo's folder
LEADERBOARD_FILE = "arena_leaderboard.png"  # the arena round's leaderboard chart
ARENA_DUELS = 8  # duels of the arena round (each voted by every member of the first guild)
ARENA_BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class AdaptSettings:
    """What the first guild's admin asks ``/hps admin adapt`` for: settings a LoRA learns with
    in a demo's time on two CPU cores."""

    lora_steps: int = 300
    lr: float = 1e-3
    inference_steps: int = 10
    eval_images: int = 8  # per held-out prompt and arm

    def options(self) -> dict[str, Any]:
        return {
            "source": "harvested",
            "lora_steps": self.lora_steps,
            "lr": self.lr,
            "inference_steps": self.inference_steps,
            "eval_images": self.eval_images,
        }


@dataclass
class AdaptationResult:
    """The first guild's adaptation as its report and the registry recorded it."""

    guild: str
    report: str = ""
    version_id: int = 0
    name: str = ""
    held_out_prompts: int = 0
    pairs: int = 0
    base_mean: float = 0.0
    base_interval: tuple[float, float] = (0.0, 0.0)
    adapted_mean: float = 0.0
    adapted_interval: tuple[float, float] = (0.0, 0.0)
    win_rate: float = 0.0
    lora_steps: int = 0
    lr: float = 0.0
    grid_posted: bool = False
    grid: Path | None = None
    promote_reply: str = ""

    def line(self) -> str:
        low, high = self.base_interval
        a_low, a_high = self.adapted_interval
        return (
            f"{self.guild} adapted {self.name} from its harvested picks: on "
            f"{self.held_out_prompts} held-out prompts ({self.pairs} pairs), mean HPS base "
            f"{self.base_mean:.2f} [{low:.2f}, {high:.2f}] vs adapted {self.adapted_mean:.2f} "
            f"[{a_low:.2f}, {a_high:.2f}], win rate {self.win_rate:.0%}"
        )


@dataclass
class ArenaResult:
    """The arena round in the first guild: blind duels of the adapted LoRA against the base
    generator on prompts the guild never harvested, voted by its members' taste."""

    guild: str
    duels: int = 0
    votes: int = 0  # counted votes, both bad included
    adapted: str = ""  # the adapted LoRA's name on the leaderboard
    wins: int = 0  # votes for the adapted LoRA's picture
    losses: int = 0  # votes for the base generator's
    ties: int = 0
    both_bad: int = 0
    win_rate: float = 0.0  # ties half
    interval: tuple[float, float] = (0.0, 0.0)  # Wilson 95%
    leaderboard: list[dict[str, Any]] = field(default_factory=list)  # rows, best first
    table: str = ""
    chart: Path | None = None

    def line(self) -> str:
        low, high = self.interval
        ratings = " > ".join(
            f"{row['name']} {row['rating']:.0f} [{row['interval'][0]:.0f}, "
            f"{row['interval'][1]:.0f}]"
            for row in self.leaderboard
        )
        return (
            f"{self.guild}: {self.duels} blind duels, {self.votes} votes: adapted "
            f"{self.wins}, base {self.losses}, tie {self.ties}, both bad {self.both_bad}; "
            f"adapted win rate {self.win_rate:.0%} [{low:.0%}, {high:.0%}]; ratings {ratings}"
        )


@dataclass
class GuildResult:
    """One guild's part of the demo: its training and what ``/hps score`` said there."""

    name: str
    taste: str
    guild_id: int
    train_report: str = ""
    model_name: str = ""  # the model the guild's training made (and promoted there)
    baseline_name: str = ""  # the model the guild used before: the global one
    held_out_prompts: int = 0
    trained_top1: float = 0.0  # on the guild's held-out prompts
    global_top1: float = 0.0  # the global model's, on the same prompts
    score_reply: str = ""

    def line(self) -> str:
        return (
            f"{self.name} (members like {self.taste} figures): top-1 on its "
            f"{self.held_out_prompts} held-out prompts {self.trained_top1:.1%} for its own "
            f"model {self.model_name} vs {self.global_top1:.1%} for the global "
            f"{self.baseline_name}"
        )


@dataclass
class DemoSummary:
    generations: int = 0
    images: int = 0
    choices: int = 0
    guilds: list[GuildResult] = field(default_factory=list)
    # What the other guilds used right after the first guild trained (guild name -> model):
    # the first guild's training must change nothing there.
    others_after_first_training: dict[str, str] = field(default_factory=dict)
    adaptation: AdaptationResult | None = None
    regenerate_reply: str = ""
    arena: ArenaResult | None = None
    files_posted: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def train_report(self) -> str:
        """The first guild's train report."""
        return self.guilds[0].train_report if self.guilds else ""

    @property
    def score_reply(self) -> str:
        """What ``/hps score`` said in the first guild."""
        return self.guilds[0].score_reply if self.guilds else ""

    def lines(self) -> list[str]:
        timing = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in self.seconds.items())
        untouched = ", ".join(
            f"{name} still used {model}" for name, model in self.others_after_first_training.items()
        )
        return [
            f"harvested: {self.generations} generations, {self.images} images, "
            f"{self.choices} picks in {len(self.guilds)} guilds",
            *(f"training:  {guild.line()}" for guild in self.guilds),
            f"isolation: after {self.guilds[0].name} trained, {untouched}"
            if self.guilds and untouched
            else "isolation: one guild only",
            *(f"score in {guild.name}: {guild.score_reply}" for guild in self.guilds),
            f"adapt:     {self.adaptation.line()}" if self.adaptation else "adapt:     not run",
            f"grid:      {self.adaptation.grid}" if self.adaptation else "grid:      none",
            f"regenerate with the adapted LoRA: {self.regenerate_reply}",
            f"arena:     {self.arena.line()}" if self.arena else "arena:     not run",
            f"chart:     {self.arena.chart}" if self.arena else "chart:     none",
            f"posted {self.files_posted} files to the channels; time: {timing}",
        ]


MARKER = ".hps-demo"


def prepare_demo_dir(folder: Path) -> None:
    """An empty folder for a new demo. A folder is only emptied if an earlier demo made it
    (it holds the marker file): ``--demo-dir .`` must not wipe someone's project."""
    if folder.exists() and any(folder.iterdir()):
        if not (folder / MARKER).is_file():
            raise ValueError(
                f"{folder} is not empty and not an earlier demo's folder: choose another --demo-dir"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("made by hps demo; emptied by the next demo\n")


def demo_settings(data_dir: Path, emulator: DiscordEmulator) -> Settings:
    """Embedded defaults inside ``data_dir``, pointed at the emulator."""
    return load_settings(
        hps_data_dir=data_dir,
        database_url="",
        broker_url="",
        storage_url="",
        models_dir=data_dir / "models",
        discord_token="offline-demo",
        discord_api_base=emulator.api_base,
        discord_gateway_url=emulator.gateway_url,
        allowed_cdn_hosts=f"127.0.0.1:{emulator.port}",
        allow_insecure_cdn=True,
        sd_pipeline=GENERATOR,
        worker_device="cpu",
    )


def worker_environment(settings: Settings) -> dict[str, str]:
    """The worker reads its settings from the environment: the demo's, not the user's."""
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    env.update(
        {
            "HPS_DATA_DIR": str(settings.hps_data_dir),
            "DATABASE_URL": settings.database_url,
            "BROKER_URL": settings.broker_url,
            "STORAGE_URL": settings.storage_url,
            "MODELS_DIR": str(settings.models_dir),
            "SD_PIPELINE": GENERATOR,
            "WORKER_DEVICE": "cpu",
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
        }
    )
    return env


def install_base_model(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """A tiny CLIP, randomly initialised (seeded), registered as the active HPS model: the
    'untuned start' that training on the community's picks has to beat."""
    import torch

    from db.models import ModelKind
    from db.registry import promote_model_version, register_model_version
    from hps.architectures import get_architecture
    from hps.checkpoints import save_checkpoint, sha256_of_file
    from hps.factory import build_model

    assert settings.models_dir is not None
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(get_architecture("tiny"))
    key = f"{BASE_MODEL}.safetensors"
    metadata = {"architecture": "tiny", "preprocess": "pad", "base": {"kind": "random-init"}}
    save_checkpoint(settings.models_dir / key, model, metadata)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            version = register_model_version(
                session,
                kind=ModelKind.hps,
                name=BASE_MODEL,
                checkpoint_key=key,
                architecture="tiny",
                checkpoint_sha256=sha256_of_file(settings.models_dir / key),
            )
            promote_model_version(session, version.id)  # global: every guild uses it
    finally:
        engine.dispose()


def slash(name: str, **options: Any) -> list[dict[str, Any]]:
    """A ``/hps <name>`` or ``/hps admin <name>`` invocation with typed options."""
    types = {bool: 5, int: 4, float: 10, str: 3}
    special = {"channel": 7, "image": 11}  # channel id; index into the uploaded attachments
    sub = [
        {"name": key, "type": special.get(key) or types[type(value)], "value": value}
        for key, value in options.items()
    ]
    if name.startswith("admin "):
        command = {"name": name.split()[1], "type": 1, "options": sub}
        return [{"name": "admin", "type": 2, "options": [command]}]
    return [{"name": name, "type": 1, "options": sub}]


async def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the demo waited {timeout:.0f} s for {what}")
        await asyncio.sleep(0.1)


async def wait_for_async(
    count: Callable[[], Any], expected: int, timeout: float, what: str
) -> None:
    """Wait until the awaitable ``count()`` returns at least ``expected``."""
    deadline = time.monotonic() + timeout
    while (found := await count()) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the demo waited {timeout:.0f} s for {what} ({found} of {expected})"
            )
        await asyncio.sleep(0.2)


def has_followup(record: InteractionRecord) -> bool:
    return bool(record.followups)


def has_result(record: InteractionRecord) -> bool:
    """A job's command got its outcome: the public result, a private word after the private
    "queued" note (a failure), or a private word instead of it (a refusal: no job)."""
    private = record.private_followups
    if record.public_followups or len(private) > 1:
        return True
    if len(private) != 1:
        return False
    # The first follow-up fills the deferred response, which progress edits later: what it
    # said first tells a queued job from a refusal.
    first = record.edits[0] if record.edits else str(private[0].get("content", ""))
    return "queued" not in first


UNACKNOWLEDGED_S = 15.0  # Discord gives the bot 3 s; after this the interaction is lost


def check_acknowledged(record: InteractionRecord, what: str) -> None:
    """Fail at once (not after REPLY_TIMEOUT_S) when the bot never acknowledged a command:
    Discord has dropped it, so no result will come."""
    if not record.callbacks and time.monotonic() - record.created_at > UNACKNOWLEDGED_S:
        raise TimeoutError(f"the bot did not acknowledge {what} in {UNACKNOWLEDGED_S:.0f} s")


async def wait_for_result(
    record: InteractionRecord, what: str, tick: Callable[[], None] | None = None
) -> None:
    """Wait until the command has its outcome (:func:`has_result`), calling ``tick`` on each
    look; fail early when the bot never acknowledged it, late (REPLY_TIMEOUT_S) otherwise."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while not has_result(record):
        check_acknowledged(record, what)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the demo waited {REPLY_TIMEOUT_S:.0f} s for {what}; "
                f"the bot's last word: {answer(record)!r}"
            )
        if tick is not None:
            tick()
        await asyncio.sleep(0.1)


def answer(record: InteractionRecord) -> str:
    """The bot's last word on an interaction: its result, else its newest follow-up, else its
    response."""
    if record.public_followups:
        return str(record.public_followups[-1].get("content", ""))
    if record.followups:
        return str(record.followups[-1].get("content", ""))
    return record.edits[-1] if record.edits else ""


class Demo:
    def __init__(
        self,
        data_dir: Path,
        *,
        generations: int = 120,
        seed: int = 0,
        say: Callable[[str], None],
        adapt: AdaptSettings | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.generations = generations  # per guild
        self.seed = seed
        self.say = say
        self.adapt = adapt or AdaptSettings()
        self.summary = DemoSummary()
        self.painter: Painter = toy_painter()  # the communities' generator, shared

    async def run(self) -> DemoSummary:
        from bot.client import HpsBot
        from migrations.runner import upgrade
        from worker.process import WorkerProcess

        prepare_demo_dir(self.data_dir)
        emulator = await DiscordEmulator(guild_name=GUILDS[0][0]).start()
        settings = demo_settings(self.data_dir, emulator)
        engine = make_engine(settings.database_url)
        self._sessions = make_session_factory(engine)
        self.say(f"demo: Discord emulator on {emulator.base_url}; data in {self.data_dir}")
        communities = await self._communities(emulator)
        upgrade(settings.database_url)
        install_base_model(settings, self._sessions)
        self.say(f"demo: starting a worker (tiny CLIP + the {GENERATOR} Stable Diffusion, CPU)")
        worker = await asyncio.to_thread(
            WorkerProcess,
            worker_environment(settings),
            self.data_dir / "worker.log",
            name="demo",
            pool="prefork",
            cwd=Path.cwd(),
        )
        bot = HpsBot(settings)
        runner = asyncio.create_task(bot.start("offline-demo"))
        try:
            await asyncio.wait_for(bot.wait_until_ready(), 60)
            self.say(f"demo: the bot is connected to {len(communities)} guilds")
            await self._loop(emulator, communities)
        finally:
            await bot.close()
            await asyncio.wait_for(runner, 30)
            await emulator.stop()
            worker.stop()
            engine.dispose()
        return self.summary

    async def _communities(self, emulator: DiscordEmulator) -> list[Community]:
        """One community per guild of :data:`GUILDS`; the first lives in the emulator's first
        guild. Each guild's members pick by their guild's taste, with their own random stream."""
        communities = []
        for index, (name, taste, prefix) in enumerate(GUILDS):
            seed = self.seed + 1000 * index
            if index == 0:  # the emulator made this guild, named GUILDS[0][0]
                community = Community(emulator, seed=seed, taste=taste, painter=self.painter)
            else:
                community = await Community.in_new_guild(
                    emulator, name, taste=taste, prefix=prefix, seed=seed, painter=self.painter
                )
            assert community.guild_id is not None
            self.summary.guilds.append(GuildResult(name, taste, community.guild_id))
            communities.append(community)
        return communities

    async def _command(
        self, emulator: DiscordEmulator, user: int, channel: str, options: list[Any], **kw: Any
    ) -> InteractionRecord:
        token = await emulator.inject_slash_command(user, channel, "hps", options, **kw)
        return emulator.interactions[token]

    async def _loop(self, emulator: DiscordEmulator, communities: list[Community]) -> None:
        started = time.monotonic()
        for community, guild in zip(communities, self.summary.guilds, strict=True):
            for kind, adapter in (
                ("generations", "multi_attachment"),
                ("midjourney", "midjourney"),
            ):
                channel = emulator.channels[community.channel(kind)]
                record = await self._command(
                    emulator,
                    community.admin,
                    community.channel("general"),
                    slash("admin channels", channel=str(channel), adapter=adapter),
                )
                await wait_for(partial(has_followup, record), 30, "/hps admin channels")
                self.say(f"admin of {guild.name}: {answer(record)}")

        expected = self.generations * len(communities)
        bar = tqdm(total=expected, desc="harvest", unit="gen", file=sys.stdout)
        for index in range(self.generations):
            kind, adapter = (
                ("generations", "multi_attachment")
                if index % 2 == 0
                else ("midjourney", "midjourney")
            )
            for community in communities:
                await community.post_generation(community.channel(kind), adapter)
            await asyncio.sleep(0.02)  # lively channels, not one burst
        await self._wait_harvest(bar, expected)
        bar.close()
        self.summary.seconds["harvest"] = time.monotonic() - started

        started = time.monotonic()
        for index, (community, guild) in enumerate(
            zip(communities, self.summary.guilds, strict=True)
        ):
            await self._train(emulator, community, guild)
            if index == 0:
                # The first guild's training and promotion changed nothing elsewhere.
                for other in self.summary.guilds[1:]:
                    used = await asyncio.to_thread(self._active_model, other.guild_id)
                    self.summary.others_after_first_training[other.name] = used
                    self.say(f"demo: {other.name} still uses {used}")
        self.summary.seconds["train"] = time.monotonic() - started

        started = time.monotonic()
        # A member of each guild scores a picture at the same time: each guild's own model.
        await asyncio.gather(
            *(
                self._score(emulator, community, guild)
                for community, guild in zip(communities, self.summary.guilds, strict=True)
            )
        )
        self.summary.seconds["score"] = time.monotonic() - started

        started = time.monotonic()
        first = communities[0]
        await self._adapt(emulator, first, self.summary.guilds[0])
        self.summary.seconds["adapt"] = time.monotonic() - started

        started = time.monotonic()
        harvested = first.posted[0]["message"]
        record = await self._command(
            emulator,
            first.members[0].user_id,
            first.channel("general"),
            slash("regenerate", message=str(harvested["id"]), n=4),
        )
        await self._follow_progress(record, "regenerate")
        self.summary.regenerate_reply = answer(record)
        self.summary.files_posted += sum(len(f.get("attachments", [])) for f in record.followups)
        self.summary.seconds["regenerate"] = time.monotonic() - started

        started = time.monotonic()
        await self._arena(emulator, first, self.summary.guilds[0])
        self.summary.seconds["arena"] = time.monotonic() - started

    def arena_prompts(self, community: Community) -> list[str]:
        """:data:`ARENA_DUELS` prompts the community never harvested (the adaptation never
        trained on them), drawn with the demo's seed."""
        harvested = {str(posted["prompt"]) for posted in community.posted}
        fresh = [prompt for prompt in toy_prompts() if prompt not in harvested]
        rng = random.Random(self.seed)
        return rng.sample(fresh, min(ARENA_DUELS, len(fresh)))

    async def _arena(
        self, emulator: DiscordEmulator, community: Community, guild: GuildResult
    ) -> None:
        """Members ask for blind duels (the adapted LoRA is active: it meets the base
        generator) and vote in them by their taste on the pictures; the leaderboard of the
        closed duels is printed and charted."""
        prompts = self.arena_prompts(community)
        channel = community.channel("general")
        self.say(f"members of {guild.name}: /hps arena on {len(prompts)} prompts never harvested")
        voters = len(community.members)
        for index, prompt in enumerate(prompts):
            member = community.members[index % voters]
            await self._command(
                emulator, member.user_id, channel, slash("arena", prompt=prompt, votes=voters)
            )
        ballots = await vote_in_posted_duels(community, channel, ContentTaste(), len(prompts))
        self.say(f"members of {guild.name}: {len(ballots)} votes in {len(prompts)} duels")
        await wait_for_async(
            partial(asyncio.to_thread, self._closed_duels, guild.guild_id),
            len(prompts),
            60,
            "the arena's duels to close",
        )
        result = await asyncio.to_thread(self._leaderboard, guild)
        result.chart = self.data_dir / LEADERBOARD_FILE
        self.say(f"bot: arena leaderboard of {guild.name}\n{result.table}")
        self.summary.arena = result

    def _closed_duels(self, guild_id: int) -> int:
        from sqlalchemy import func, select

        from db.models import Duel, DuelStatus

        with self._sessions() as session:
            query = (
                select(func.count())
                .select_from(Duel)
                .where(Duel.guild_id == guild_id, Duel.status == DuelStatus.closed)
            )
            return int(session.scalar(query) or 0)

    def _leaderboard(self, guild: GuildResult) -> ArenaResult:
        """The guild's closed duels rated (``hps leaderboard``'s fit), the adapted LoRA's
        head-to-head record against the base generator, the chart written."""
        from db.arena import BASE_MODEL_ID, configuration_names, rating_votes
        from db.scope import Scope
        from hps.arena.chart import leaderboard_png, leaderboard_text
        from hps.arena.ratings import (
            RatingOptions,
            Votes,
            head_to_head,
            leaderboard,
            win_rate_interval,
        )

        with self._sessions() as session:
            votes = rating_votes(session, Scope.guild(guild.guild_id))
            names = configuration_names(session, votes.models)
        duels = self._closed_duels(guild.guild_id)  # a session of its own, after (SQLite)
        ids = votes.models
        index = {model_id: position for position, model_id in enumerate(ids)}
        rated = Votes.create(
            [names[model_id] for model_id in ids],
            [index[model_id] for model_id in votes.model_a],
            [index[model_id] for model_id in votes.model_b],
            list(votes.outcome),
        )
        board = leaderboard(rated, RatingOptions(rounds=ARENA_BOOTSTRAP_ROUNDS, seed=self.seed))
        (self.data_dir / LEADERBOARD_FILE).write_bytes(leaderboard_png(board))
        [adapted] = [names[model_id] for model_id in ids if model_id != BASE_MODEL_ID]
        record = head_to_head(rated, adapted, names[BASE_MODEL_ID])
        rate = win_rate_interval(record.wins, record.ties, record.losses)
        return ArenaResult(
            guild.name, duels=duels, votes=len(votes) + votes.both_bad, adapted=adapted,
            wins=record.wins, losses=record.losses, ties=record.ties, both_bad=votes.both_bad,
            win_rate=rate.rate, interval=(rate.low, rate.high),
            leaderboard=[row.to_dict() for row in board.models],
            table=leaderboard_text(board),
        )  # fmt: skip

    async def _score(
        self, emulator: DiscordEmulator, community: Community, guild: GuildResult
    ) -> None:
        member = community.members[0]
        prompt = toy_prompts()[0]
        [picture] = await asyncio.to_thread(self.painter, prompt, [self.seed + 7])
        record = await self._command(
            emulator,
            member.user_id,
            community.channel("general"),
            slash("score", image=0, prompt=prompt),
            attachments=[("mine.png", png(picture), "image/png")],
        )
        await wait_for_result(record, f"/hps score in {guild.name}")
        guild.score_reply = answer(record)
        self.say(f"{member.name} in {guild.name}: /hps score -> {guild.score_reply}")

    async def _train(
        self, emulator: DiscordEmulator, community: Community, guild: GuildResult
    ) -> None:
        """The guild's admin trains a model on the guild's picks; its report compares it with
        the global model on the guild's held-out prompts."""
        self.say(
            f"admin of {guild.name}: /hps admin train ({TRAIN_EPOCHS} epochs, lr 1e-3: a tiny "
            "model learns fast)"
        )
        record = await self._command(
            emulator,
            community.admin,
            community.channel("general"),
            slash("admin train", force=True, epochs=TRAIN_EPOCHS, lr=1e-3),
        )
        await self._follow_progress(record, f"train {guild.name}")
        guild.train_report = answer(record)
        self.summary.files_posted += sum(len(f.get("attachments", [])) for f in record.followups)
        metrics = await asyncio.to_thread(self._own_model_metrics, guild)
        if metrics is None:
            raise RuntimeError(f"{guild.name} has no model of its own after training")
        guild.baseline_name = str(metrics.get("baseline_name", ""))
        guild.trained_top1 = float(metrics["candidate"]["top1_accuracy"])
        guild.global_top1 = float(metrics["baseline"]["top1_accuracy"])
        guild.held_out_prompts = int(metrics["candidate"]["sets"])

    async def _adapt(
        self, emulator: DiscordEmulator, community: Community, guild: GuildResult
    ) -> None:
        """The guild's admin adapts the generator from the guild's harvested image sets (scored
        by the guild's own model), keeps the grid the report posted, and promotes the LoRA so
        that regenerations use it."""
        options = self.adapt.options()
        self.say(
            f"admin of {guild.name}: /hps admin adapt ("
            + ", ".join(f"{key} {value}" for key, value in options.items())
            + ")"
        )
        record = await self._command(
            emulator, community.admin, community.channel("general"), slash("admin adapt", **options)
        )
        await self._follow_progress(record, f"adapt {guild.name}")
        result = AdaptationResult(guild.name, report=answer(record))
        posted = [a for f in record.followups for a in f.get("attachments", [])]
        result.grid_posted = any(a.get("filename") == GRID_FILE for a in posted)
        self.summary.files_posted += len(posted)
        grid = await asyncio.to_thread(self._read_adaptation, guild, result)
        result.grid = self.data_dir / GRID_FILE
        shutil.copyfile(grid, result.grid)
        self.summary.adaptation = result
        promote = await self._command(
            emulator,
            community.admin,
            community.channel("general"),
            slash("admin promote", version_id=result.version_id),
        )
        await wait_for_result(promote, f"/hps admin promote in {guild.name}")
        result.promote_reply = answer(promote)
        self.say(f"admin of {guild.name}: /hps admin promote -> {result.promote_reply}")

    def _read_adaptation(self, guild: GuildResult, result: AdaptationResult) -> Path:
        """The guild's newest LoRA version's evaluation into ``result``; its grid's path."""
        from db.models import ModelKind
        from db.registry import list_model_versions
        from db.scope import Scope

        with self._sessions() as session:
            versions = list_model_versions(session, ModelKind.lora, Scope.guild(guild.guild_id))
            if not versions:
                raise RuntimeError(f"{guild.name} has no LoRA after /hps admin adapt")
            version, evaluation = versions[0], dict(versions[0].metrics)
            result.version_id, result.name = version.id, version.name
            folder = self.data_dir / "models" / version.checkpoint_key
        recipe = json.loads((folder / "hps_lora.json").read_text())  # what the job ran
        result.lora_steps, result.lr = int(recipe["lora"]["steps"]), float(recipe["lora"]["lr"])
        result.pairs = int(evaluation["pairs"])
        per_prompt = max(1, self.adapt.eval_images)
        result.held_out_prompts = result.pairs // per_prompt
        result.base_mean = float(evaluation["base_mean"])
        result.adapted_mean = float(evaluation["adapted_mean"])
        low, high = evaluation["base_interval"]
        result.base_interval = (float(low), float(high))
        low, high = evaluation["adapted_interval"]
        result.adapted_interval = (float(low), float(high))
        result.win_rate = float(evaluation["win_rate"])
        return Path(evaluation["grid_png"])

    def _active_model(self, guild_id: int) -> str:
        """The name of the HPS model ``guild_id`` uses (its own, else the global one)."""
        from db.models import ModelKind
        from db.registry import get_active_model

        with self._sessions() as session:
            active = get_active_model(session, ModelKind.hps, guild_id)
            return active.name if active is not None else "no model"

    def _own_model_metrics(self, guild: GuildResult) -> dict[str, Any] | None:
        """The evaluation that the guild's training recorded for the model it made (the
        candidate's and the baseline's metrics on the guild's held-out prompts); its name goes
        into ``guild.model_name``."""
        from db.models import ModelKind
        from db.registry import get_active_model

        with self._sessions() as session:
            active = get_active_model(session, ModelKind.hps, guild.guild_id)
            if active is None or active.guild_id != guild.guild_id:
                return None
            guild.model_name = active.name
            return dict(active.metrics)

    def _count_rows(self) -> dict[str, int]:
        from db.stats import row_counts

        with self._sessions() as session:
            return row_counts(session)

    async def _wait_harvest(self, bar: tqdm[Any], expected: int) -> None:
        deadline = time.monotonic() + 120
        while True:
            counts = await asyncio.to_thread(self._count_rows)
            bar.update(counts["generations"] - bar.n)
            if counts["generations"] >= expected and counts["choices"] >= expected:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the harvest stopped at {counts}")
            await asyncio.sleep(0.2)
        self.summary.generations = counts["generations"]
        self.summary.images = counts["images"]
        self.summary.choices = counts["choices"]

    async def _follow_progress(self, record: InteractionRecord, what: str) -> None:
        """Mirror the progress the bot shows in Discord on the terminal until the result."""
        bar = tqdm(total=100, desc=what, unit="%", file=sys.stdout)

        def show() -> None:
            shown = record.edits[-1] if record.edits else ""
            if "% — " in shown:
                percent = int(shown.split("%")[0].rsplit(" ", 1)[-1])
                bar.update(percent - bar.n)
                bar.set_postfix_str(shown.split("% — ", 1)[1][:40])

        try:
            await wait_for_result(record, what, show)
            bar.update(100 - bar.n)
        finally:
            bar.close()
        self.say(f"bot: {answer(record)}")


def run_demo(
    data_dir: Path,
    *,
    generations: int = 120,
    seed: int = 0,
    say: Callable[[str], None] = print,
    adapt: AdaptSettings | None = None,
) -> DemoSummary:
    """Run the offline demo to the end and print its summary (``generations`` per guild)."""
    demo = Demo(data_dir, generations=generations, seed=seed, say=say, adapt=adapt)
    summary = asyncio.run(demo.run())
    say("demo: summary")
    for line in summary.lines():
        say("  " + line)
    return summary
