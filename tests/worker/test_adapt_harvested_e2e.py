"""The adapt job's choice of data through the queue (tiny pipeline, a real worker): with
enough harvested prompts of 4+ images in the guild it adapts from them and says how many;
with fewer it generates, then selects, as before."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from config import load_settings
from db.datasets import split_for_prompt
from db.ingest import GenerationIn, record_generation
from db.prompts import prompt_hash
from media.store import LocalImageStore
from tests.factories import stored_planted_set
from tests.worker.fixtures import queue_fixtures, run_job
from tests.worker.harness import register_tiny_model

GUILD, OTHER_GUILD = 1, 2
QUICK = {
    "eval_prompts": ["a cat"],
    "inference_steps": 2,
    "eval_images_per_prompt": 1,
    "images_per_prompt": 4,
    "alpha": 0.5,  # below 1: every set of four has a positive and a negative
    "lora_steps": 2,
    "lr": 1e-3,
    "batch_size": 2,
}


data_dir, worker, client = queue_fixtures("adapt-harvested-data", "adapt")


def training_prompts(count: int) -> list[str]:
    """Prompts of the training split under the worker's salt (none held out)."""
    salt = load_settings().split_salt
    candidates = (f"a harvested lighthouse {i}" for i in range(100))
    chosen = [p for p in candidates if split_for_prompt(prompt_hash(p), salt) != "test"]
    return chosen[:count]


def harvest(factory: sessionmaker[Session], store: LocalImageStore, prompts: list[str]) -> None:
    """Four stored images per prompt in the guild, and one set in another guild."""
    rng = random.Random(7)
    message_ids = iter(range(7_700_000, 7_800_000))
    for guild, prompt in [(GUILD, p) for p in prompts] + [(OTHER_GUILD, "another guild's")]:
        stored = stored_planted_set(store, rng, preferred=0)
        with factory() as session, session.begin():
            record_generation(
                session,
                GenerationIn(next(message_ids), 1, prompt, "other-bot", stored, guild_id=guild),
            )


def adapt(client: Celery, factory: sessionmaker[Session], **params: Any) -> dict[str, Any]:
    job = run_job(client, factory, "adapt", {**QUICK, **params}, guild_id=GUILD)
    return dict(job.result)


def test_auto_uses_harvested_sets_when_there_are_enough_else_generates(
    worker: Any, client: Celery, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    register_tiny_model(pg_factory, data_dir / "models", "hps-for-adapt", seed=1)
    prompts = training_prompts(3)
    harvest(pg_factory, LocalImageStore(data_dir / "images"), prompts)

    harvested = adapt(client, pg_factory, min_harvested_prompts=3)
    selection = harvested["selection"]
    assert harvested["source"] == "harvested"
    assert harvested["source_note"].startswith("3 harvested prompts with 4+ images")
    assert selection["harvested_prompts"] == 3 and selection["harvested_images"] == 12
    assert "generated" not in selection
    evaluation = harvested["evaluation"]
    assert {"base_mean", "base_negative_mean", "adapted_mean", "win_rate"} <= set(evaluation)

    generated = adapt(client, pg_factory, min_harvested_prompts=4)
    assert generated["source"] == "generated"
    assert "fewer than 4" in generated["source_note"]
    assert generated["selection"]["generated"] == 4 * 3  # the guild's three prompts
