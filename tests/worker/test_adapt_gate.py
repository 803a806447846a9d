"""The adapt job starts the human gate (tiny pipeline, a real worker): in a guild whose gate is
on, the candidate it registers gets its gate run and pending duels in the same transaction (on
the guild's own prompts, against its active LoRA or the base generator, in the arena channel),
and its report says so; in a guild whose gate is off nothing is scheduled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.arena_gate import set_arena_settings
from db.ingest import record_generation
from db.models import ArenaSettings, Duel, DuelStatus, GateRun, Prompt
from tests.factories import make_generation
from tests.worker.fixtures import queue_fixtures, run_job
from tests.worker.harness import register_tiny_model

GATED, UNGATED = 31, 32
ARENA_CHANNEL, ADAPT_CHANNEL = 3100, 3101
QUICK = {
    "prompts": ["a cat", "a dog"],
    "eval_prompts": ["a held-out cat"],
    "inference_steps": 2,
    "eval_images_per_prompt": 1,
    "images_per_prompt": 4,
    "alpha": 0.5,
    "lora_steps": 2,
    "lr": 1e-3,
    "batch_size": 2,
}


data_dir, worker, client = queue_fixtures("adapt-gate-data", "adapt-gate")


def adapt(client: Celery, factory: sessionmaker[Session], guild_id: int) -> dict[str, Any]:
    return dict(
        run_job(client, factory, "adapt", QUICK, guild_id=guild_id, channel_id=ADAPT_CHANNEL).result
    )


def test_a_gated_guilds_candidate_gets_its_duels_and_an_ungated_ones_none(
    worker: Any, client: Celery, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    register_tiny_model(pg_factory, data_dir / "models", "hps-for-gate", seed=1)
    with pg_factory() as session, session.begin():
        record_generation(session, make_generation(prompt="a gated owl", guild_id=GATED))
        record_generation(session, make_generation(prompt="an ungated secret", guild_id=UNGATED))
        set_arena_settings(
            session, GATED, gate_enabled=True, duels_per_candidate=3, votes_per_duel=4,
            arena_channel_id=ARENA_CHANNEL,
        )  # fmt: skip
    try:
        gated = adapt(client, pg_factory, GATED)
        ungated = adapt(client, pg_factory, UNGATED)
    finally:
        with pg_factory() as session, session.begin():
            session.execute(delete(ArenaSettings))
    assert "human gate is on" in gated["text"] and "human gate" not in ungated["text"]
    with pg_factory() as session:
        [run] = session.scalars(select(GateRun)).all()
        assert (run.guild_id, run.candidate_id) == (GATED, gated["model_version_id"])
        assert run.compared_id is None and run.channel_id == ARENA_CHANNEL
        duels = session.scalars(select(Duel).where(Duel.gate_run_id == run.id)).all()
        assert len(duels) == 3 and {d.status for d in duels} == {DuelStatus.pending}
        assert {d.generator for d in duels} == {"tiny"} and {d.max_votes for d in duels} == {4}
        prompts = {d.prompt_id for d in duels}
        used = set(session.scalars(select(Prompt.text).where(Prompt.id.in_(prompts))))
        # The guild's own prompt first, then the job's held-out one; never the other guild's.
        assert used == {"a gated owl", "a held-out cat"}
