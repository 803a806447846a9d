"""The Celery app of the workers, with the task registrations.

Start a worker with ``hps worker`` (see its --help): one process per GPU, pinned with
CUDA_VISIBLE_DEVICES, ``-P solo`` or prefork with one child; torch loads lazily inside tasks,
never in the parent before a fork.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.exc import DBAPIError

import worker.metrics  # noqa: F401  (Celery signal receivers: Prometheus metrics, logging)
from config import get_settings
from jobqueue.app import make_celery
from worker.lifecycle import run_job
from worker.runtime import reset_runtime

app = make_celery(get_settings())

RETRY = {
    "autoretry_for": (DBAPIError, ConnectionError),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@worker_process_init.connect
def _fresh_process(**_kwargs: Any) -> None:
    reset_runtime()


@app.task(name="hps.score_images", **RETRY)
def score_images(job_id: str) -> str:
    """Score uploaded images against a prompt (``/hps score``)."""
    from worker.tasks.scoring import score_uploaded

    return run_job(job_id, score_uploaded)


@app.task(name="hps.rank_generation", **RETRY)
def rank_generation(job_id: str) -> str:
    """Score and rank the images of one generation (``/hps rank``)."""
    from worker.tasks.scoring import rank_generation as body

    return run_job(job_id, body)


@app.task(name="hps.score_unscored", **RETRY)
def score_unscored(job_id: str) -> str:
    """Score every image the active model has not scored yet."""
    from worker.tasks.scoring import score_all_unscored

    return run_job(job_id, score_all_unscored)


@app.task(name="hps.train", **RETRY)
def train(job_id: str) -> str:
    """Train a candidate HPS model and promote it if it beats the active one."""
    from worker.tasks.training import train_candidate

    return run_job(job_id, train_candidate)


@app.task(name="hps.generate", **RETRY)
def generate(job_id: str) -> str:
    """Generate images for ``/hps generate`` with the adapted model."""
    from worker.tasks.generation import generate_images

    return run_job(job_id, generate_images)


@app.task(name="hps.regenerate", **RETRY)
def regenerate(job_id: str) -> str:
    """Best-of-n regeneration with the adapted model, beside the original."""
    from worker.tasks.generation import regenerate as body

    return run_job(job_id, body)


@app.task(name="hps.adapt", **RETRY)
def adapt(job_id: str) -> str:
    """Adapt Stable Diffusion with HPS (LoRA) and register a candidate."""
    from worker.tasks.generation import adapt as body

    return run_job(job_id, body)


@app.task(name="hps.export_dataset", **RETRY)
def export_dataset(job_id: str) -> str:
    """Export the community's choices (Pick-a-Pic parquet, HPD JSON) with a dataset card."""
    from worker.tasks.export import export_dataset as body

    return run_job(job_id, body)


@app.task(name="hps.stats_report", **RETRY)
def stats_report(job_id: str) -> str:
    """Charts and a short summary of what the community collected (``/hps admin stats``)."""
    from worker.tasks.stats import stats_report as body

    return run_job(job_id, body)
