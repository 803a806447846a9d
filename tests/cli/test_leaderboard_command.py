"""``hps leaderboard``: a guild's closed duels rated (Bradley–Terry with Davidson ties), read
from the product's own database (SQLite on embedded defaults) by the real command."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.harvesting.adapters import multi_attachment
from bot.harvesting.adapters.base import AttachmentRef, GeneratorMessage, ParsedGeneration
from db.arena import DuelImage, close_duel, create_duel, open_duel, record_vote, set_duel_images
from db.engine import make_engine, make_session_factory
from db.ingest import ChoiceIn, GenerationIn, record_choice, record_generation
from db.models import ChoiceMethod, ModelKind
from db.registry import register_model_version
from tests.factories import next_message_id, stored_images

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "DISCORD_TOKEN")
GUILD, OTHER_GUILD = 4242, 5353
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def hps(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in CLEARED}
    environment.update(HPS_DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=data.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def play(data: Path) -> dict[str, int]:
    """Duels in GUILD between the base generator, a LoRA people like (wins 3 of 4 votes) and
    one they do not (loses 3 of 4), and one duel in OTHER_GUILD; returns the LoRAs' ids."""
    engine = make_engine(f"sqlite:///{data / 'hps.sqlite3'}")
    factory = make_session_factory(engine)
    rng = random.Random(0)
    message_ids = iter(range(1, 10_000))
    with factory() as session, session.begin():
        ids = {
            name: register_model_version(
                session, kind=ModelKind.lora, name=name, checkpoint_key=f"lora/{name}",
                architecture="tiny", guild_id=guild,
            ).id
            for name, guild in (("liked", GUILD), ("disliked", GUILD), ("theirs", OTHER_GUILD))
        }  # fmt: skip
    matches = [(ids["liked"], None, 0.75), (None, ids["disliked"], 0.75)] * 6
    matches += [(ids["liked"], ids["disliked"], 0.9)] * 4
    for first, second, first_wins in matches:
        with factory() as session, session.begin():
            duel = create_duel(
                session, guild_id=GUILD, channel_id=1, prompt="a red circle", generator="toy",
                configurations=(first, second), open_seconds=600, rng=rng,
            )  # fmt: skip
            set_duel_images(session, duel.id, DuelImage("a" * 64, "a"), DuelImage("b" * 64, "b"))
            open_duel(session, duel.id, next(message_ids), now=T0)
            for user in range(1, 9):
                winner_is_first = rng.random() < first_wins
                first_side = "a" if duel.version_a_id == first else "b"
                vote = first_side if winner_is_first else {"a": "b", "b": "a"}[first_side]
                record_vote(session, duel.id, user, vote, now=T0 + timedelta(seconds=user))
            record_vote(session, duel.id, 99, "both_bad", now=T0 + timedelta(seconds=9))
            close_duel(session, duel.id, now=T0 + timedelta(seconds=10))
    engine.dispose()
    return ids


def test_leaderboard_rates_a_guilds_closed_duels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepared = hps("run", "--check", data=data)
    assert prepared.returncode == 0, prepared.stderr
    empty = hps("leaderboard", "--guild", str(GUILD), data=data)
    assert empty.returncode == 2 and (
        f"guild {GUILD} has no rated votes yet (duel votes or harvested picks between labelled"
        " generators; 0 both-bad duel votes" in empty.stderr
    )
    ids = play(data)
    result = hps(
        "leaderboard", "--guild", str(GUILD), "--rounds", "200", "--png", "board.png", data=data
    )
    assert result.returncode == 0, result.stderr
    board = json.loads(result.stdout)
    names = [model["name"] for model in board["models"]]
    assert names == [f"liked (#{ids['liked']})", "base", f"disliked (#{ids['disliked']})"]
    assert f"theirs (#{ids['theirs']})" not in result.stdout  # another guild's model
    assert board["both_bad_votes"] == 16 and board["votes"] == 16 * 8
    liked, _base, disliked = board["models"]
    assert liked["interval"][0] > disliked["interval"][1]
    assert liked["rank"] == 1 and liked["wins"] > liked["losses"]
    assert (tmp_path / "board.png").read_bytes().startswith(b"\x89PNG")


def harvest(data: Path) -> None:
    """Generator messages the multi-attachment adapter reads, stored as harvesting stores them,
    with number-emoji picks: in GUILD six sdxl-vs-sd-1.5 messages (labels from filenames and
    alt text; users 1-4 pick sdxl, user 5 sd-1.5) and one ``Models: sdxl, flux`` message (user
    1 picks flux); in OTHER_GUILD one message between other models."""
    engine = make_engine(f"sqlite:///{data / 'hps.sqlite3'}")
    factory = make_session_factory(engine)
    adapter = multi_attachment.ADAPTER
    seeds = iter(range(100, 10_000))

    def message(guild: int, content: str, attachments: list[AttachmentRef], picks: dict) -> None:
        parsed = adapter.read(GeneratorMessage(next_message_id(), content, attachments, True))
        assert isinstance(parsed, ParsedGeneration) and parsed.params.get("image_models")
        with factory() as session, session.begin():
            recorded = record_generation(
                session,
                GenerationIn(
                    source_message_id=next_message_id(), channel_id=1, guild_id=guild,
                    prompt=parsed.prompt, generator="discord-bot:77",
                    images=stored_images(None, [next(seeds) for _ in attachments]),
                    requester_id=parsed.requester_id, params=parsed.params,
                ),
            )  # fmt: skip
            for user, emoji in picks.items():
                choice = ChoiceIn(
                    user, adapter.reaction_position(emoji), ChoiceMethod.reaction,
                    generation_id=recorded.generation_id,
                )  # fmt: skip
                record_choice(session, choice)

    def png(name: str, description: str | None = None) -> AttachmentRef:
        return AttachmentRef(f"https://cdn/{name}", name, 10, "image/png", description)

    one, two = "1\ufe0f\u20e3", "2\ufe0f\u20e3"
    sdxl_first = {1: one, 2: one, 3: one, 4: one, 5: two}
    for _ in range(6):
        pair = [png("model-sdxl_0.png"), png("1.png", "model: SD-1.5")]
        message(GUILD, "**a red fox** - <@10>", pair, sdxl_first)
    message(GUILD, "**a cat** - <@10>\nModels: sdxl, flux", [png("0.png"), png("1.png")], {1: two})
    theirs = [png("model-theirs_0.png"), png("model-sdxl_1.png")]
    message(OTHER_GUILD, "**a dog** - <@10>", theirs, {1: one})
    engine.dispose()


def test_leaderboard_rates_harvested_picks_between_labelled_generators(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepared = hps("run", "--check", data=data)
    assert prepared.returncode == 0, prepared.stderr
    harvest(data)
    result = hps("leaderboard", "--guild", str(GUILD), "--rounds", "50", data=data)
    assert result.returncode == 0, result.stderr
    board = json.loads(result.stdout)
    tallies = {m["name"]: (m["wins"], m["ties"], m["losses"]) for m in board["models"]}
    assert tallies == {"sdxl": (24, 0, 7), "sd-1.5": (6, 0, 24), "flux": (1, 0, 0)}
    assert board["votes"] == 31 and board["harvested_pick_votes"] == 31
    assert board["both_bad_votes"] == 0 and "theirs" not in result.stdout
    rating = {m["name"]: m["rating"] for m in board["models"]}
    assert rating["sdxl"] > rating["sd-1.5"]
