"""The offline demo behind ``hps run`` without a Discord token: the whole loop on this machine.

The emulator plays Discord, a simulated community plays the people and the generator bots,
and the real product runs against them: the bot (real discord.py over sockets), a worker
process, an embedded SQLite database, broker and image store in a folder of their own. The
demo harvests the community's picks, trains a preference model on them, scores an image and
regenerates a harvested prompt, printing progress and a summary. Nothing leaves 127.0.0.1 and
nothing is downloaded: the base model is a tiny, randomly initialised CLIP and the image
generator is the tiny Stable Diffusion built in code."""

from __future__ import annotations

import asyncio
import os
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
from sandbox.community import Community, draw_candidate, png
from sandbox.emulator import DiscordEmulator, InteractionRecord

REPLY_TIMEOUT_S = 600.0


@dataclass
class DemoSummary:
    generations: int = 0
    images: int = 0
    choices: int = 0
    train_report: str = ""
    score_reply: str = ""
    regenerate_reply: str = ""
    files_posted: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        timing = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in self.seconds.items())
        return [
            f"harvested: {self.generations} generations, {self.images} images, "
            f"{self.choices} picks",
            f"training:  {self.train_report}",
            f"score:     {self.score_reply}",
            f"regenerate: {self.regenerate_reply}",
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
        sd_pipeline="tiny",
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
            "SD_PIPELINE": "tiny",
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
    key = "demo-base.safetensors"
    metadata = {"architecture": "tiny", "preprocess": "pad", "base": {"kind": "random-init"}}
    save_checkpoint(settings.models_dir / key, model, metadata)
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            version = register_model_version(
                session,
                kind=ModelKind.hps,
                name="demo-base",
                checkpoint_key=key,
                architecture="tiny",
                checkpoint_sha256=sha256_of_file(settings.models_dir / key),
            )
            promote_model_version(session, version.id)
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


def has_followup(record: InteractionRecord) -> bool:
    return bool(record.followups)


def has_result(record: InteractionRecord) -> bool:
    """A job's command got its outcome: the public result, or a private word after the
    private "queued" note (a refusal or a failure)."""
    return bool(record.public_followups) or len(record.private_followups) > 1


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
        self, data_dir: Path, *, generations: int = 120, seed: int = 0, say: Callable[[str], None]
    ) -> None:
        self.data_dir = data_dir
        self.generations = generations
        self.seed = seed
        self.say = say
        self.summary = DemoSummary()

    async def run(self) -> DemoSummary:
        from bot.client import HpsBot
        from migrations.runner import upgrade
        from worker.process import WorkerProcess

        prepare_demo_dir(self.data_dir)
        emulator = await DiscordEmulator().start()
        settings = demo_settings(self.data_dir, emulator)
        engine = make_engine(settings.database_url)
        self._sessions = make_session_factory(engine)
        self.say(f"demo: Discord emulator on {emulator.base_url}; data in {self.data_dir}")
        upgrade(settings.database_url)
        install_base_model(settings, self._sessions)
        self.say("demo: starting a worker (tiny CLIP + tiny Stable Diffusion, CPU)")
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
            self.say("demo: the bot is connected")
            await self._loop(emulator)
        finally:
            await bot.close()
            await asyncio.wait_for(runner, 30)
            await emulator.stop()
            worker.stop()
            engine.dispose()
        return self.summary

    async def _command(
        self, emulator: DiscordEmulator, user: int, channel: str, options: list[Any], **kw: Any
    ) -> InteractionRecord:
        token = await emulator.inject_slash_command(user, channel, "hps", options, **kw)
        return emulator.interactions[token]

    async def _loop(self, emulator: DiscordEmulator) -> None:
        community = Community(emulator, seed=self.seed)
        admin = community.admin
        started = time.monotonic()
        for channel, adapter in (("generations", "multi_attachment"), ("midjourney", "midjourney")):
            record = await self._command(
                emulator,
                admin,
                "general",
                slash("admin channels", channel=str(emulator.channels[channel]), adapter=adapter),
            )
            await wait_for(partial(has_followup, record), 30, "/hps admin channels")
            self.say(f"admin: {answer(record)}")

        bar = tqdm(total=self.generations, desc="harvest", unit="gen", file=sys.stdout)
        for index in range(self.generations):
            if index % 2 == 0:
                await community.post_generation("generations", "multi_attachment")
            else:
                await community.post_generation("midjourney", "midjourney")
            await asyncio.sleep(0.02)  # a lively channel, not one burst
        await self._wait_harvest(bar)
        bar.close()
        self.summary.seconds["harvest"] = time.monotonic() - started

        started = time.monotonic()
        self.say("admin: /hps admin train (6 epochs, lr 1e-3: a tiny model learns fast)")
        record = await self._command(
            emulator, admin, "general", slash("admin train", force=True, epochs=6, lr=1e-3)
        )
        await self._follow_progress(record, "train")
        self.summary.train_report = answer(record)
        self.summary.files_posted += sum(len(f.get("attachments", [])) for f in record.followups)
        self.summary.seconds["train"] = time.monotonic() - started

        started = time.monotonic()
        member = community.members[0]
        picture = draw_candidate(community.rng)
        record = await self._command(
            emulator,
            member.user_id,
            "general",
            slash("score", image=0, prompt="a shiny robot at night"),
            attachments=[("mine.png", png(picture.image), "image/png")],
        )
        await wait_for(partial(has_result, record), REPLY_TIMEOUT_S, "/hps score")
        self.summary.score_reply = answer(record)
        self.say(f"{member.name}: /hps score -> {self.summary.score_reply}")
        self.summary.seconds["score"] = time.monotonic() - started

        started = time.monotonic()
        harvested = community.posted[0]["message"]
        record = await self._command(
            emulator,
            member.user_id,
            "general",
            slash("regenerate", message=str(harvested["id"]), n=4),
        )
        await self._follow_progress(record, "regenerate")
        self.summary.regenerate_reply = answer(record)
        self.summary.files_posted += sum(len(f.get("attachments", [])) for f in record.followups)
        self.summary.seconds["regenerate"] = time.monotonic() - started

    def _count_rows(self) -> dict[str, int]:
        from db.stats import row_counts

        with self._sessions() as session:
            return row_counts(session)

    async def _wait_harvest(self, bar: tqdm[Any]) -> None:
        deadline = time.monotonic() + 120
        while True:
            counts = await asyncio.to_thread(self._count_rows)
            bar.update(counts["generations"] - bar.n)
            if counts["generations"] >= self.generations and counts["choices"] >= self.generations:
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
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        while not has_result(record):
            if time.monotonic() > deadline:
                bar.close()
                raise TimeoutError(f"the demo waited {REPLY_TIMEOUT_S:.0f} s for {what}")
            shown = record.edits[-1] if record.edits else ""
            if "% — " in shown:
                percent = int(shown.split("%")[0].rsplit(" ", 1)[-1])
                bar.update(percent - bar.n)
                bar.set_postfix_str(shown.split("% — ", 1)[1][:40])
            await asyncio.sleep(0.2)
        bar.update(100 - bar.n)
        bar.close()
        self.say(f"bot: {answer(record)}")


def run_demo(
    data_dir: Path, *, generations: int = 120, seed: int = 0, say: Callable[[str], None] = print
) -> DemoSummary:
    """Run the offline demo to the end and print its summary."""
    demo = Demo(data_dir, generations=generations, seed=seed, say=say)
    summary = asyncio.run(demo.run())
    say("demo: summary")
    for line in summary.lines():
        say("  " + line)
    return summary
