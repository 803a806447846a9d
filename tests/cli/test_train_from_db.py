"""``hps train --from-db``: a tiny model trained on the product's own database (SQLite on
embedded defaults) by the real command; a guild's closed arena duels' votes are its pairwise
training sets unless ``--no-duel-votes``, another guild's are never read."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from db.arena import close_duel, record_vote
from db.datasets import split_for_prompt
from db.engine import make_engine, make_session_factory
from db.prompts import prompt_hash
from hps.checkpoints import load_checkpoint
from media.store import LocalImageStore
from tests.arena_factories import make_duel, register_lora, stored_duel_sides

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "DISCORD_TOKEN", "SPLIT_SALT")
GUILD, OTHER_GUILD = 4242, 5353
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DEFAULT_SALT = "hps-split-v1"  # config.Settings.split_salt's default


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


def duels(data: Path, guild_id: int, count: int) -> int:
    """``count`` closed duels of planted images in ``guild_id``, two voters picking the red
    disc and one tie each; how many of the side votes fall in the train split."""
    engine = make_engine(f"sqlite:///{data / 'hps.sqlite3'}")
    factory = make_session_factory(engine)
    store, rng = LocalImageStore(data / "images"), random.Random(guild_id)
    in_train = 0
    with factory() as session, session.begin():
        lora = register_lora(
            session, f"lora-{guild_id}", guild_id=guild_id, checkpoint_key="lora/x"
        )
        for index in range(count):
            planted = rng.randrange(2)
            sides = stored_duel_sides(store, rng, planted)
            prompt = f"scene {guild_id}-{index}"
            duel = make_duel(
                session, guild_id=guild_id, configurations=(lora, None), opened_at=T0,
                prompt=prompt, channel_id=1, rng=rng, sides=sides,
            )  # fmt: skip
            for user, vote in ((1, "ab"[planted]), (2, "ab"[planted]), (3, "tie")):
                record_vote(session, duel.id, user, vote, now=T0 + timedelta(seconds=user))
            close_duel(session, duel.id, now=T0 + timedelta(seconds=10))
            in_train += 2 * (split_for_prompt(prompt_hash(prompt), DEFAULT_SALT) == "train")
    engine.dispose()
    return in_train


def test_train_from_the_database_uses_duel_votes_unless_told_not_to(tmp_path: Path) -> None:
    data = tmp_path / "data"
    prepared = hps("run", "--check", data=data)
    assert prepared.returncode == 0, prepared.stderr
    in_train = duels(data, GUILD, 16)
    duels(data, OTHER_GUILD, 4)
    common = ("train", "--from-db", "--guild", str(GUILD), "--arch", "tiny", "--device", "cpu")
    common += ("--steps", "2", "--batch-size", "4", "--lr", "1e-3")

    trained = hps(*common, "--out", str(tmp_path / "run"), data=data)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["steps"] == 2 and Path(summary["checkpoint"]).is_file()
    _, metadata = load_checkpoint(Path(summary["checkpoint"]))
    trained_on = metadata["trained_on"]
    assert trained_on["scope"] == f"guild {GUILD}" and trained_on["duel_votes"] is True
    assert trained_on["train_sets"] == in_train > 0  # this guild's votes for a side only
    assert trained_on["duel_vote_sets"] >= in_train

    without = hps(*common, "--no-duel-votes", "--out", str(tmp_path / "none"), data=data)
    assert without.returncode == 2
    assert f"no training choices in the database for guild {GUILD}" in without.stderr
    assert "Traceback" not in without.stderr

    misuse = hps("train", "--data", "x.jsonl", "--no-duel-votes", "--arch", "tiny",
                 "--out", str(tmp_path / "x"), data=data)  # fmt: skip
    assert misuse.returncode == 2 and "go with --from-db" in misuse.stderr
