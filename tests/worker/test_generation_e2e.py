"""Generation, adaptation and regeneration through the queue with the tiny pipeline."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.ingest import GenerationIn, record_generation
from db.models import ModelKind, ModelStatus, ModelVersion
from db.registry import promote_model_version
from media.store import LocalImageStore
from tests.factories import stored_planted_set
from tests.worker.fixtures import queue_fixtures, run_job
from tests.worker.harness import outbox_rows, register_tiny_model

TINY = {"steps": 3}


data_dir, worker, client = queue_fixtures("generation-data", "sd")


def run(client: Celery, factory: sessionmaker[Session], kind: str, params: dict[str, Any]) -> Any:
    job = run_job(client, factory, kind, params, guild_id=1)  # the data's server
    assert len(outbox_rows(factory, job.id)) == 1
    return job


def test_generate_adapt_promote_regenerate(
    worker: Any, client: Celery, pg_factory: sessionmaker[Session], data_dir: Path
) -> None:
    store = LocalImageStore(data_dir / "images")
    register_tiny_model(pg_factory, data_dir / "models", "hps-for-sd", seed=1)

    base = run(
        client, pg_factory, "generate", {"prompt": "a red fox", "n": 3, "seeds": [1, 2, 3], **TINY}
    )
    images = base.result["images"]
    assert [image["seed"] for image in images] == [1, 2, 3]
    assert all(store.exists(image["sha256"]) for image in images)
    assert base.result["lora_version"] is None and base.result["negative_prompt"] is None
    again = run(
        client, pg_factory, "generate", {"prompt": "a red fox", "n": 3, "seeds": [1, 2, 3], **TINY}
    )
    assert [i["sha256"] for i in again.result["images"]] == [i["sha256"] for i in images]

    adapted = run(
        client,
        pg_factory,
        "adapt",
        {
            "prompts": [f"a scene {i}" for i in range(6)],
            "eval_prompts": ["a cat", "a dog"],
            "images_per_prompt": 4,
            "inference_steps": 3,
            "lora_steps": 4,
            "lr": 1e-3,
            "batch_size": 2,
        },
    )
    result = adapted.result
    assert result["status"] == "candidate" and result["negative_prompt"] == "Weird image. "
    assert result["selection"]["generated"] == 24
    assert Path(result["evaluation"]["grid_png"]).read_bytes()[:4] == b"\x89PNG"
    assert 0.0 <= result["evaluation"]["win_rate"] <= 1.0
    # The job named its prompts: generated, then selected; judged in three arms.
    assert result["source"] == "generated" and result["source_note"]
    assert 0.0 <= result["evaluation"]["win_rate_vs_base_negative"] <= 1.0
    assert result["evaluation"]["pairs"] == 8  # two held-out prompts, four seeds each
    with pg_factory() as session:
        lora = session.scalars(
            select(ModelVersion).where(ModelVersion.kind == ModelKind.lora)
        ).one()
        assert lora.status == ModelStatus.candidate
        assert (
            data_dir / "models" / lora.checkpoint_key / "pytorch_lora_weights.safetensors"
        ).is_file()
    with pg_factory() as session, session.begin():
        promote_model_version(session, lora.id)

    styled = run(
        client, pg_factory, "generate", {"prompt": "a red fox", "n": 3, "seeds": [1, 2, 3], **TINY}
    )
    assert styled.result["lora_version"]["id"] == lora.id
    assert styled.result["negative_prompt"] == "Weird image. "
    assert [i["sha256"] for i in styled.result["images"]] != [i["sha256"] for i in images]

    stored = stored_planted_set(store, random.Random(4), preferred=0)
    with pg_factory() as session, session.begin():
        generation_id = record_generation(
            session,
            GenerationIn(4_400_000, 1, "a lighthouse at night", "other-bot", stored, guild_id=1),
        ).generation_id
    redo = run(client, pg_factory, "regenerate", {"generation_id": generation_id, "n": 3, **TINY})
    assert len(redo.result["original"]["scores"]) == 4
    assert redo.result["regenerated"]["score"] == max(redo.result["regenerated"]["all_scores"])
    assert store.exists(redo.result["regenerated"]["sha256"])
    assert redo.result["lora_version"]["id"] == lora.id
