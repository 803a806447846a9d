"""Guild isolation end to end (issue 12): two guilds in the Discord emulator, the real
discord.py bot, PostgreSQL and a Celery worker process with tiny models.

Every slash command of the bot is run from guild A, by A's admin and by A's member, against
guild B's ids (message links, message ids, model version ids, channels); nothing of B may be
read, posted or changed. Then per-guild training and promotion change what A's `/hps score`
reports and nothing in B, and operator-only commands are refused to guild admins (the
interaction is sent to the bot directly, whatever Discord's UI would show) and allowed to an
operator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from discord import app_commands
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from db.channels import enable_channel
from db.datasets import split_for_prompt
from db.ingest import ChoiceIn, record_choice, record_generation
from db.models import (
    TERMINAL_JOB_STATUSES,
    Choice,
    ChoiceMethod,
    Generation,
    GuildConfig,
    HarvestChannel,
    Image,
    Job,
    JobStatus,
    ModelKind,
    ModelStatus,
    ModelVersion,
    OutboxMessage,
    Prompt,
    Score,
    Sharing,
)
from db.prompts import prompt_hash
from db.registry import get_active_model
from db.scope import Scope, set_sharing
from media.store import LocalImageStore
from sandbox.emulator import DiscordEmulator, InteractionRecord
from tests.bot.helpers import count, eventually, png_bytes, post_generation
from tests.factories import make_generation
from tests.worker.harness import register_tiny_model

ONE = "1\ufe0f\u20e3"
GLOBAL_MODEL = "bot-score"  # the live fixture's global active model
ADMINS_ONLY = "Only server admins can use this command."
OPERATORS_ONLY = "Only the bot's operators can use this command."
NO_GENERATION = "I have no generation for that message in this server"
NO_LORA = "This server has no LoRA yet, so there is nothing to compare."
# A channel option naming another guild's channel: discord.py cannot resolve it in the
# interaction's guild (Discord itself would never send one), and the bot's error handler
# apologises privately.
UNRESOLVABLE = "Sorry, something went wrong on my side; the admins can find it in the logs."
B_GUILD_NAME = "Secret Guild B"
B_CHANNELS = ("b-secret-generations", "b-secret-general")


# --- the two guilds ---------------------------------------------------------------------


@dataclass
class Side:
    """One guild of the test: its people, channels and what was harvested there."""

    guild_id: int
    admin: int
    member: int
    requester: int
    harvested: str  # the harvested channel's name
    general: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)


@dataclass
class World:
    emulator: DiscordEmulator
    bot: Any
    factory: sessionmaker[Session]
    store: LocalImageStore
    models_dir: Path
    a: Side
    b: Side
    versions: dict[str, int]

    def channel_id(self, name: str) -> int:
        return self.emulator.channels[name]

    def link(self, message: dict[str, Any], guild_id: int | None = None) -> str:
        guild = (
            guild_id if guild_id is not None else self.emulator.guild_of(int(message["channel_id"]))
        )
        return f"https://discord.com/channels/{guild}/{message['channel_id']}/{message['id']}"


async def two_guilds(
    live: dict[str, Any],
    factory: sessionmaker[Session],
    tmp_path: Path,
    *,
    guild_models: bool,
) -> World:
    """Guild A (the emulator's first) and guild B (pooled, so that any query that wrongly
    took the operators' pooled scope would reach it), each with an admin, a member, a
    harvested channel, two harvested generations picked by their requester and ranked (so
    scored). Model versions: the global active one and a global candidate; B's candidate;
    with ``guild_models`` also an active model of A's and of B's."""
    emulator: DiscordEmulator = live["emulator"]
    bot = live["bot"]
    b_id = await emulator.add_guild(B_GUILD_NAME, B_CHANNELS)
    await eventually(lambda: bot.get_guild(b_id) is not None)
    generator = emulator.add_user("ImageGen", bot=True)
    a = Side(
        emulator.guild_id,
        emulator.add_user("a-admin", admin=True),
        emulator.add_user("a-member"),
        emulator.add_user("a-requester"),
        "generations",
        "general",
    )
    b = Side(
        b_id,
        emulator.add_user("b-admin", admin=True, guild_id=b_id),
        emulator.add_user("b-member"),
        emulator.add_user("b-requester"),
        B_CHANNELS[0],
        B_CHANNELS[1],
    )
    with factory() as session, session.begin():
        enable_channel(session, a.guild_id, emulator.channels[a.harvested], "multi_attachment")
        enable_channel(session, b.guild_id, emulator.channels[b.harvested], "multi_attachment")
        set_sharing(session, b.guild_id, Sharing.pooled)
    harvest = bot.get_cog("HarvestCog")
    harvest.forget_channel_config()
    for side, prompt, seed in (
        (a, "an A-side red fox {}", 1),
        (b, "B-SECRET lighthouse {}", 5),
    ):
        for n in range(2):
            side.prompts.append(prompt.format(n))
            message = await post_generation(
                emulator, side.harvested, generator, side.requester, side.prompts[-1], seed + n
            )
            side.messages.append(message)
            await emulator.inject_reaction(side.requester, message, ONE)
    await eventually(lambda: count(factory, Choice) == 4, 30)

    models_dir = tmp_path / "models"
    versions = {
        "global-candidate": register_tiny_model(
            factory, models_dir, "global-candidate", seed=11, guild_id=None, activate=False
        ),
        "b-secret-candidate": register_tiny_model(
            factory, models_dir, "b-secret-candidate", seed=12, guild_id=b.guild_id, activate=False
        ),
    }
    if guild_models:
        versions["a-own-model"] = register_tiny_model(
            factory, models_dir, "a-own-model", seed=13, guild_id=a.guild_id, activate=True
        )
        versions["b-secret-model"] = register_tiny_model(
            factory, models_dir, "b-secret-model", seed=14, guild_id=b.guild_id, activate=True
        )
    world = World(
        emulator, bot, factory, LocalImageStore(tmp_path / "images"), models_dir, a, b, versions
    )
    for side in (a, b):  # scores in both guilds, each by its own model
        record = await run_command(
            world, side.member, side.general, "hps rank", {"message": world.link(side.messages[0])}
        )
        await eventually(partial(has_public_followups, record), 60)
    await harvest.flush_last_seen()
    return world


def has_public_followups(record: InteractionRecord) -> bool:
    return bool(record.public_followups)


# --- invoking commands --------------------------------------------------------------------


def command_options(
    registered: dict[str, Any], qualified: str, values: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """The top-level name and the interaction options of ``qualified`` (``"hps admin
    promote"``) with ``values``, typed as the bot registered them."""
    root, *path = qualified.split()
    chain = []
    node = registered[root]
    for name in path:
        node = next(o for o in node.get("options", []) if o["name"] == name)
        chain.append(node)
    types = {o["name"]: o["type"] for o in node.get("options", [])}
    options: list[dict[str, Any]] = [
        {"name": name, "type": types[name], "value": value} for name, value in values.items()
    ]
    for node in reversed(chain):
        options = [{"name": node["name"], "type": node["type"], "options": options}]
    return root, options


async def run_command(
    world: World,
    user: int,
    channel: str,
    qualified: str,
    values: dict[str, Any],
    *,
    image: bool = False,
) -> InteractionRecord:
    """``user`` runs ``/qualified`` in ``channel``; returns the interaction's record once it
    has its first reply."""
    root, options = command_options(world.emulator.commands, qualified, values)
    attachments = [("fox.png", png_bytes(), "image/png")] if image else None
    token = await world.emulator.inject_slash_command(user, channel, root, options, attachments)
    record = world.emulator.interactions[token]
    await eventually(lambda: bool(record.edits), 30)
    return record


def jobs_of(factory: sessionmaker[Session], token: str) -> list[Job]:
    with factory() as session:
        return list(session.scalars(select(Job).where(Job.interaction_token == token)))


async def finish_jobs(world: World, record: InteractionRecord) -> list[Job]:
    """Wait until the interaction's jobs are over and their results were delivered."""

    def settled() -> bool:
        jobs = jobs_of(world.factory, record.token)
        if not all(job.status in TERMINAL_JOB_STATUSES for job in jobs):
            return False
        with world.factory() as session:
            pending = session.scalar(
                select(OutboxMessage.id).where(
                    OutboxMessage.job_id.in_([job.id for job in jobs]),
                    OutboxMessage.delivered_at.is_(None),
                    OutboxMessage.dead_at.is_(None),
                )
            )
        return pending is None

    await eventually(settled, 300)
    jobs = jobs_of(world.factory, record.token)
    if jobs:  # the queued note, then the result (public) or the failure (private)
        await eventually(lambda: len(record.followups) >= 2, 30)
    return jobs


async def score_model_name(world: World, user: int, channel: str) -> str:
    """The model name `/hps score` reports for ``user`` in ``channel``."""
    record = await run_command(
        world, user, channel, "hps score", {"image": 0, "prompt": "a fox"}, image=True
    )
    await eventually(lambda: bool(record.public_followups), 60)
    content = record.public_followups[0]["content"]
    assert " · model " in content, content
    return str(content.rsplit(" · model ", 1)[1])


# --- what B has, and what must never show up in A --------------------------------------


def b_rows(world: World) -> dict[str, Any]:
    """Every row of B's (and the global model versions, which A may not change either)."""
    b = world.b.guild_id
    b_channels = [world.channel_id(name) for name in B_CHANNELS]
    with world.factory() as session:
        generations = select(Generation.id).where(Generation.guild_id == b)
        images = select(Image.id).where(Image.generation_id.in_(generations))

        def rows(query: Any) -> list[tuple[Any, ...]]:
            return sorted(tuple(row) for row in session.execute(query))

        return {
            "generations": rows(
                select(
                    Generation.id,
                    Generation.source_message_id,
                    Generation.channel_id,
                    Generation.requester_id,
                    Generation.prompt_id,
                    Generation.generator,
                ).where(Generation.guild_id == b)
            ),
            "images": rows(select(Image.id, Image.sha256).where(Image.id.in_(images))),
            "choices": rows(
                select(Choice.id, Choice.user_id, Choice.chosen_image_id, Choice.updated_at).where(
                    Choice.generation_id.in_(generations)
                )
            ),
            "scores": rows(
                select(Score.id, Score.image_id, Score.model_version_id, Score.score).where(
                    or_(Score.guild_id == b, Score.image_id.in_(images))
                )
            ),
            "model_versions": rows(
                select(
                    ModelVersion.id, ModelVersion.name, ModelVersion.status, ModelVersion.guild_id
                ).where(or_(ModelVersion.guild_id == b, ModelVersion.guild_id.is_(None)))
            ),
            "harvest_channels": rows(
                select(
                    HarvestChannel.channel_id,
                    HarvestChannel.guild_id,
                    HarvestChannel.adapter,
                    HarvestChannel.enabled,
                    HarvestChannel.last_seen_message_id,
                ).where(
                    or_(HarvestChannel.guild_id == b, HarvestChannel.channel_id.in_(b_channels))
                )
            ),
            "guild_configs": rows(
                select(GuildConfig.guild_id, GuildConfig.sharing, GuildConfig.admin_role_ids).where(
                    GuildConfig.guild_id == b
                )
            ),
            "jobs": rows(select(Job.id, Job.status).where(Job.guild_id == b)),
            "outbox": rows(
                select(OutboxMessage.id).where(
                    or_(OutboxMessage.guild_id == b, OutboxMessage.channel_id.in_(b_channels))
                )
            ),
        }


def b_data(world: World) -> dict[str, Any]:
    """B's rows but its jobs and outbox."""
    return {k: v for k, v in b_rows(world).items() if k not in ("jobs", "outbox")}


def b_secrets(world: World) -> tuple[list[str], list[bytes]]:
    """Strings and image bytes of B's that nothing in A may show."""
    b = world.b
    words = [*b.prompts, "B-SECRET", "b-secret", B_GUILD_NAME, str(b.guild_id)]
    words += [str(world.channel_id(name)) for name in B_CHANNELS]
    words += [str(m["id"]) for m in b.messages]
    words += [str(user) for user in (b.admin, b.member, b.requester)]
    blobs = []
    for message in b.messages:
        for attachment in message["attachments"]:
            blobs.append(world.emulator.files[_file_key(attachment["url"])][0])
    with world.factory() as session:
        shas = session.scalars(
            select(Image.sha256)
            .join(Generation, Generation.id == Image.generation_id)
            .where(Generation.guild_id == b.guild_id)
        ).all()
    blobs += [world.store.get(sha) for sha in shas]
    return words, blobs


def _file_key(url: str) -> str:
    return url.split("/cdn/attachments/", 1)[1].split("/", 1)[0]


def assert_shows_nothing_of_b(
    world: World, messages: list[dict[str, Any]], texts: list[str], where: str
) -> None:
    words, blobs = b_secrets(world)
    for text in texts + [str(m.get("content") or "") for m in messages]:
        leaked = [word for word in words if word in text]
        assert not leaked, f"{where}: B's {leaked} shown in {text!r}"
    for message in messages:
        for attachment in message.get("attachments", []):
            data = world.emulator.files[_file_key(attachment["url"])][0]
            assert data not in blobs, f"{where}: B's image posted as {attachment['filename']}"


# --- the table ------------------------------------------------------------------------------

JOB = "job"  # the command queues a job of A's scope (and it runs to its end)


@dataclass(frozen=True)
class Case:
    """One invocation: its options (from the world), and what A's admin and A's member get:
    JOB or the start of the (private) reply. ``check`` looks closer at the admin's run."""

    options: Callable[[World], dict[str, Any]]
    admin: str | Callable[[World], str]
    member: str | Callable[[World], str]
    image: bool = False
    check: Callable[[World, InteractionRecord], None] | None = None


def _b_link(w: World) -> dict[str, Any]:
    return {"message": w.link(w.b.messages[0])}


def _b_message_id(w: World) -> dict[str, Any]:
    return {"message": str(w.b.messages[1]["id"])}


def _b_message_in_a_link(w: World) -> dict[str, Any]:
    """B's channel and message under A's guild id: the link's guild is not trusted."""
    return {"message": w.link(w.b.messages[0], guild_id=w.a.guild_id)}


def _best_of_one(
    options: Callable[[World], dict[str, Any]],
) -> Callable[[World], dict[str, Any]]:
    return lambda w: {**options(w), "n": 1}


def _not_found(name: str) -> Callable[[World], str]:
    return lambda w: f"no model version {w.versions[name]} in this server"


def _check_models(w: World, record: InteractionRecord) -> None:
    assert "a-own-model" in record.edits[0] and GLOBAL_MODEL not in record.edits[0]


def _check_stats(w: World, record: InteractionRecord) -> None:
    # A's own rows only (counted here without db.scope): its harvest and its /hps generate.
    with w.factory() as session:
        generations = select(Generation.id).where(Generation.guild_id == w.a.guild_id)
        counts = [
            len(session.scalars(query).all())
            for query in (
                generations,
                select(Image.id).where(Image.generation_id.in_(generations)),
                select(Choice.id).where(Choice.generation_id.in_(generations)),
            )
        ]
    expected = "The dataset holds {} generations, {} images, {} choices".format(*counts)
    assert record.edits[0].startswith(expected), (expected, record.edits[0])


def _check_export(w: World, record: InteractionRecord) -> None:
    [card] = record.public_followups
    assert "Dataset exported: 2 choices by 1 users on 2 prompts" in card["content"]


def _check_score(w: World, record: InteractionRecord) -> None:
    [result] = record.public_followups
    assert result["content"].endswith(" · model a-own-model"), result["content"]


def _with_b_duels(w: World) -> dict[str, Any]:
    """No options; before the first run, B gets a closed duel its secret model won (A has
    none): A's leaderboard must not show it."""
    from db.arena import DuelImage, close_duel, create_duel, open_duel, record_vote, set_duel_images

    if "b-duel" not in w.versions:
        with w.factory() as session, session.begin():
            duel = create_duel(
                session,
                guild_id=w.b.guild_id,
                channel_id=w.channel_id(w.b.general),
                prompt="B-SECRET duel",
                generator="toy",
                configurations=(w.versions["b-secret-candidate"], None),
                open_seconds=600,
            )
            set_duel_images(session, duel.id, DuelImage("c" * 64, "c"), DuelImage("d" * 64, "d"))
            open_duel(session, duel.id, 1)
            winner = "a" if duel.version_a_id is not None else "b"
            vote = record_vote(session, duel.id, w.b.member, winner)
            assert vote.outcome == "recorded", vote
            close_duel(session, duel.id)
            w.versions["b-duel"] = duel.id
    return {}


def _check_leaderboard(w: World, record: InteractionRecord) -> None:
    [result] = record.public_followups
    assert result["content"].startswith(f"<@{w.a.admin}> No leaderboard yet"), result["content"]
    assert not result["attachments"]


def _promote(name: str) -> Case:
    return Case(lambda w: {"version_id": w.versions[name]}, _not_found(name), ADMINS_ONLY)


def _operator(options: Callable[[World], dict[str, Any]] = lambda w: {}) -> Case:
    return Case(options, OPERATORS_ONLY, OPERATORS_ONLY)


TABLE: dict[str, list[Case]] = {
    "hps score": [
        Case(lambda w: {"image": 0, "prompt": "an A-side fox"}, JOB, JOB, True, _check_score)
    ],
    "hps generate": [Case(lambda w: {"prompt": "an A-side fox", "n": 1}, JOB, JOB)],
    # A has no LoRA of its own (nor a global one): nothing to compare, whatever B has.
    "hps arena": [Case(lambda w: {"prompt": "an A-side fox"}, NO_LORA, NO_LORA)],
    # B has a rated duel, A none: A's leaderboard (a job, for members too) is still empty.
    "hps leaderboard": [Case(_with_b_duels, JOB, JOB, check=_check_leaderboard)],
    "hps rank": [
        Case(options, NO_GENERATION, NO_GENERATION)
        for options in (_b_link, _b_message_id, _b_message_in_a_link)
    ],
    "hps regenerate": [
        Case(_best_of_one(options), NO_GENERATION, NO_GENERATION)
        for options in (_b_link, _b_message_id, _b_message_in_a_link)
    ],
    # The admin check (bot.checks.admin) runs before discord.py resolves the options: a
    # member is refused as a non-admin before the channel is looked at.
    "hps admin channels": [
        Case(
            lambda w: {"channel": str(w.channel_id(w.b.harvested)), "adapter": "midjourney"},
            UNRESOLVABLE,
            ADMINS_ONLY,
        ),
        Case(lambda w: {"channel": str(w.channel_id(w.b.harvested))}, UNRESOLVABLE, ADMINS_ONLY),
    ],
    "hps admin backfill": [
        Case(
            lambda w: {"channel": str(w.channel_id(w.b.harvested)), "from_start": True},
            UNRESOLVABLE,
            ADMINS_ONLY,
        )
    ],
    "hps admin promote": [
        _promote("b-secret-candidate"),
        _promote("b-secret-model"),
        _promote("global-candidate"),
    ],
    "hps admin models": [
        Case(lambda w: {}, "This server's model versions", ADMINS_ONLY, check=_check_models)
    ],
    "hps admin sharing": [
        Case(lambda w: {"mode": "pooled"}, "This server's data is now pooled", ADMINS_ONLY),
        Case(lambda w: {"mode": "private"}, "This server's data is now private", ADMINS_ONLY),
    ],
    # A's own arena settings (the gate stays off: A's adapt job below must not start a run);
    # B's channel cannot be named (discord.py cannot resolve another server's channel).
    "hps admin arena": [
        Case(lambda w: {"min_votes": 5, "duels": 2}, "Human gate off: ", ADMINS_ONLY),
        Case(lambda w: {"channel": str(w.channel_id(w.b.general))}, UNRESOLVABLE, ADMINS_ONLY),
    ],
    "hps admin stats": [Case(lambda w: {}, JOB, ADMINS_ONLY, check=_check_stats)],
    "hps admin train": [Case(lambda w: {"force": True}, JOB, ADMINS_ONLY)],
    "hps admin adapt": [
        Case(lambda w: {"prompts": 4, "lora_steps": 1, "images_per_prompt": 4}, JOB, ADMINS_ONLY)
    ],
    "hps admin export": [Case(lambda w: {}, JOB, ADMINS_ONLY, check=_check_export)],
    "hps operator train": [_operator(lambda w: {"force": True})],
    "hps operator adapt": [_operator(lambda w: {"prompts": 4, "lora_steps": 1})],
    "hps operator promote": [
        _operator(lambda w: {"version_id": w.versions["b-secret-candidate"]}),
        _operator(lambda w: {"version_id": w.versions["global-candidate"]}),
    ],
    "hps operator models": [_operator()],
    "hps operator export": [_operator()],
    # Last: they change the invoking user's own consent (and forget-me deletes their data).
    "hps privacy optout": [Case(lambda w: {}, "Opted out", "Opted out")],
    "hps privacy optin": [Case(lambda w: {}, "Opted in", "Opted in")],
    "hps privacy forget-me": [Case(lambda w: {}, "Done: ", "Done: ")],
}


def tree_command_names(bot: Any) -> set[str]:
    """Qualified names of every command in the bot's tree (context menus by name)."""
    names: set[str] = set()

    def walk(command: Any) -> None:
        if isinstance(command, app_commands.Group):
            for child in command.commands:
                walk(child)
        else:
            names.add(command.qualified_name)

    for command in bot.tree.get_commands():
        walk(command)
    return names


def registered_command_names(registered: dict[str, Any]) -> set[str]:
    """Qualified names of the commands the bot registered with (the emulated) Discord."""
    names: set[str] = set()

    def walk(prefix: str, node: dict[str, Any]) -> None:
        subs = [o for o in node.get("options", []) if o.get("type") in (1, 2)]
        if not subs:
            names.add(prefix)
        for sub in subs:
            walk(f"{prefix} {sub['name']}", sub)

    for name, command in registered.items():
        walk(name, command)
    return names


# --- the tests ------------------------------------------------------------------------------


async def test_every_command_from_a_against_bs_ids_reads_posts_and_changes_nothing_of_b(
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    world = await two_guilds(live, pg_factory, tmp_path, guild_models=True)
    # Every command of the bot has its cases: a new one without them fails here.
    assert tree_command_names(world.bot) == set(TABLE)
    assert registered_command_names(world.emulator.commands) == set(TABLE)

    before = b_rows(world)
    assert len(before["generations"]) == 2 and len(before["choices"]) == 2
    assert len(before["scores"]) == 3 and len(before["outbox"]) == 1  # B's own rank, in B
    first_post = len(world.emulator.posts)
    a, b_channels = world.a, {world.channel_id(name) for name in B_CHANNELS}

    for qualified, cases in TABLE.items():
        for number, case in enumerate(cases):
            for role, user, expected in (
                ("admin", a.admin, case.admin),
                ("member", a.member, case.member),
            ):
                where = f"{qualified} #{number} as A's {role}"
                posts_before = len(world.emulator.posts)
                record = await run_command(
                    world, user, a.general, qualified, case.options(world), image=case.image
                )
                jobs = await finish_jobs(world, record)
                want = expected(world) if callable(expected) else expected
                if want == JOB:
                    assert jobs, f"{where}: no job queued ({record.edits})"
                    for job in jobs:
                        assert job.guild_id == a.guild_id, where
                        assert job.params.get("scope") != "pooled", where
                        assert job.channel_id == world.channel_id(a.general), where
                        assert job.status in (JobStatus.succeeded, JobStatus.failed), where
                        assert_shows_nothing_of_b(
                            world, [], [json.dumps(job.result), str(job.error)], where
                        )
                else:
                    await asyncio.sleep(0.3)  # a job would have been recorded by now
                    assert not jobs_of(world.factory, record.token), where
                    assert record.edits[0].startswith(want), f"{where}: {record.edits}"
                    assert record.original is not None and record.original["flags"] & 64, where
                if case.check is not None and role == "admin":
                    case.check(world, record)
                new_posts = [post.message for post in world.emulator.posts[posts_before:]]
                assert_shows_nothing_of_b(world, new_posts, record.edits, where)
                assert not [m for m in new_posts if int(m["channel_id"]) in b_channels], where
                assert b_rows(world) == before, where

    # Nothing was posted in B's channels, and nothing posted anywhere showed B's data.
    posts = [post.message for post in world.emulator.posts[first_post:]]
    assert posts and not [m for m in posts if int(m["channel_id"]) in b_channels]
    assert_shows_nothing_of_b(world, posts, [], "all posts")


async def _enough_to_train(world: World, salt: str) -> None:
    """Choices in A for a training run (at least 8 training and 4 held-out sets; prompts
    picked by their split, so the count never depends on chance)."""
    wanted = {"train": 10, "validation": 0, "test": 5}
    prompts: list[str] = []
    n = 0
    while any(wanted.values()):
        prompt = f"an A-side scene number {n}"
        n += 1
        split = split_for_prompt(prompt_hash(prompt), salt)
        if wanted[split]:
            wanted[split] -= 1
            prompts.append(prompt)
    with world.factory() as session, session.begin():
        for index, prompt in enumerate(prompts):
            generation = record_generation(
                session,
                make_generation(
                    requester_id=world.a.requester,
                    prompt=prompt,
                    seeds=[1000 + 4 * index + k for k in range(4)],
                    store=world.store,
                    guild_id=world.a.guild_id,
                    channel_id=world.channel_id(world.a.harvested),
                ),
            )
            record_choice(
                session,
                ChoiceIn(
                    world.a.requester, index % 4, ChoiceMethod.button, generation.generation_id
                ),
            )


def a_training_sets(world: World, salt: str) -> int:
    """A's choices whose prompt is in the training split (what A's snapshot may hold)."""
    with world.factory() as session:
        texts = session.scalars(
            select(Prompt.text)
            .join(Generation, Generation.prompt_id == Prompt.id)
            .join(Choice, Choice.generation_id == Generation.id)
            .where(Generation.guild_id == world.a.guild_id, Choice.chosen_image_id.is_not(None))
        ).all()
    return sum(split_for_prompt(prompt_hash(text), salt) == "train" for text in texts)


def active_names(world: World) -> dict[str, str | None]:
    """The HPS model each guild uses (and the global one)."""
    with world.factory() as session:

        def name(guild_id: int | None) -> str | None:
            version = get_active_model(session, ModelKind.hps, guild_id)
            return None if version is None else version.name

        return {"A": name(world.a.guild_id), "B": name(world.b.guild_id), "global": name(None)}


def statuses(world: World) -> dict[str, ModelStatus]:
    with world.factory() as session:
        return {v.name: v.status for v in session.scalars(select(ModelVersion))}


async def test_per_guild_training_and_promotion_change_only_that_guild_and_operators_rule_the_global_model(  # noqa: E501
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    world = await two_guilds(live, pg_factory, tmp_path, guild_models=False)
    a, b = world.a, world.b
    assert await score_model_name(world, a.member, a.general) == GLOBAL_MODEL
    assert await score_model_name(world, b.member, b.general) == GLOBAL_MODEL

    # A's admin trains a model of A's own (forced: the gate is not under test here).
    salt = live["settings"].split_salt
    await _enough_to_train(world, salt)
    b_before = b_data(world)
    record = await run_command(world, a.admin, a.general, "hps admin train", {"force": True})
    [job] = await finish_jobs(world, record)
    assert job.status == JobStatus.succeeded, job.error
    result = job.result
    assert result is not None
    assert result["promoted"] is True and result["scope"] == f"guild {a.guild_id}"
    trained = result["candidate_name"]
    assert result["trained_on"]["train_sets"] == a_training_sets(world, salt)  # A's only
    with pg_factory() as session:
        version = session.get_one(ModelVersion, result["model_version_id"])
        assert (version.guild_id, version.status) == (a.guild_id, ModelStatus.active)
    assert f"> Trained {trained} on " in record.public_followups[0]["content"]
    assert active_names(world) == {"A": trained, "B": GLOBAL_MODEL, "global": GLOBAL_MODEL}
    assert await score_model_name(world, a.member, a.general) == trained
    assert await score_model_name(world, b.member, b.general) == GLOBAL_MODEL
    assert b_data(world) == b_before  # B's own /hps score ran meanwhile: its jobs aside

    # A's admin promotes another of A's versions: A's trained one is retired, nothing else.
    manual = register_tiny_model(
        pg_factory, world.models_dir, "a-manual", seed=21, guild_id=a.guild_id, activate=False
    )
    record = await run_command(
        world, a.admin, a.general, "hps admin promote", {"version_id": manual}
    )
    assert record.edits[0] == f"Model a-manual ({manual}) is now active in this server."
    assert statuses(world)[trained] == ModelStatus.retired
    assert active_names(world) == {"A": "a-manual", "B": GLOBAL_MODEL, "global": GLOBAL_MODEL}
    assert await score_model_name(world, a.member, a.general) == "a-manual"
    assert await score_model_name(world, b.member, b.general) == GLOBAL_MODEL
    # B's admin cannot promote A's version, nor the global candidate, from B.
    for version_id in (manual, world.versions["global-candidate"]):
        record = await run_command(
            world, b.admin, b.general, "hps admin promote", {"version_id": version_id}
        )
        assert record.edits[0] == f"no model version {version_id} in this server"
    record = await run_command(world, b.admin, b.general, "hps admin models", {})
    assert "b-secret-candidate" in record.edits[0] and "a-manual" not in record.edits[0]
    assert trained not in record.edits[0]

    # Operator-only commands: refused to every guild admin, server-side.
    global_candidate = world.versions["global-candidate"]
    operator_calls: list[tuple[str, dict[str, Any]]] = [
        ("hps operator train", {"force": True}),
        ("hps operator adapt", {"prompts": 4, "lora_steps": 1}),
        ("hps operator promote", {"version_id": global_candidate}),
        ("hps operator models", {}),
        ("hps operator export", {}),
    ]
    assert {name for name, _ in operator_calls} == {
        name for name in TABLE if name.startswith("hps operator ")
    }
    before = statuses(world)
    for side in (a, b):
        for name, values in operator_calls:
            record = await run_command(world, side.admin, side.general, name, values)
            assert record.edits == [OPERATORS_ONLY], (name, record.edits)
            assert not jobs_of(pg_factory, record.token)
    assert statuses(world) == before

    # An operator (OPERATOR_USER_IDS) may: the global models are theirs.
    operator = world.emulator.add_user("operator")
    world.bot.settings.operator_user_ids = [operator]
    record = await run_command(world, operator, a.general, "hps operator models", {})
    listing = record.edits[0]
    assert listing.startswith("Global model versions, newest first:")
    assert "global-candidate" in listing and GLOBAL_MODEL in listing
    assert "a-manual" not in listing and "b-secret" not in listing and trained not in listing
    # A guild's version is not a global one, even for an operator.
    record = await run_command(
        world, operator, a.general, "hps operator promote", {"version_id": manual}
    )
    assert record.edits[0] == f"no model version {manual} among the global models"
    record = await run_command(
        world, operator, a.general, "hps operator promote", {"version_id": global_candidate}
    )
    assert record.edits[0] == (
        f"Model global-candidate ({global_candidate}) is now active for every server without "
        "its own."
    )
    # B has no model of its own: it follows the global one; A keeps its own.
    assert active_names(world) == {
        "A": "a-manual",
        "B": "global-candidate",
        "global": "global-candidate",
    }
    assert statuses(world)[GLOBAL_MODEL] == ModelStatus.retired
    assert statuses(world)["a-manual"] == ModelStatus.active
    assert await score_model_name(world, b.member, b.general) == "global-candidate"
    assert await score_model_name(world, a.member, a.general) == "a-manual"


async def test_a_generation_made_in_a_guild_belongs_to_that_guild(
    live: dict[str, Any], pg_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    world = await two_guilds(live, pg_factory, tmp_path, guild_models=False)
    a = world.a
    record = await run_command(
        world, a.member, a.harvested, "hps generate", {"prompt": "an A-side fox", "n": 1}
    )
    await finish_jobs(world, record)
    [posted] = record.public_followups
    await eventually(lambda: count(pg_factory, Generation, Generation.generator == "hps-sd") == 1)
    with pg_factory() as session:
        generation = session.scalars(
            select(Generation).where(Generation.generator == "hps-sd")
        ).one()
        assert generation.source_message_id == int(posted["id"])
        in_pool = session.scalar(
            select(Generation.id).where(
                Generation.generator == "hps-sd", Scope.pooled().generations()
            )
        )
    # A is private: nothing of A's, its generate-and-pick loop included, is in the pool.
    assert in_pool is None
    assert generation.guild_id == a.guild_id
    ranked = await run_command(
        world, a.member, a.general, "hps rank", {"message": world.link(posted)}
    )
    await finish_jobs(world, ranked)
    assert ranked.public_followups, ranked.edits
