"""Per-process resources of a worker, created lazily after the fork (never in the parent:
database connections and CUDA must not cross a fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings, get_settings
from db.engine import make_engine, make_session_factory
from media.store import LocalImageStore, S3ImageStore, open_store
from worker.model_cache import ModelCache

if TYPE_CHECKING:
    from worker.pipeline_cache import PipelineCache


@dataclass
class Runtime:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def factory(self) -> sessionmaker[Session]:
        return make_session_factory(self.engine)

    @cached_property
    def store(self) -> LocalImageStore | S3ImageStore:
        return open_store(self.settings.storage_url, s3_endpoint_url=self.settings.s3_endpoint_url)

    @cached_property
    def models(self) -> ModelCache:
        assert self.settings.models_dir is not None
        return ModelCache(self.settings.models_dir, self.settings.worker_device)

    @cached_property
    def pipelines(self) -> PipelineCache:
        from worker.pipeline_cache import PipelineCache

        assert self.settings.models_dir is not None
        return PipelineCache(
            self.settings.sd_pipeline, self.settings.worker_device, self.settings.models_dir
        )


_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This process's runtime (created on first use)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(get_settings())
    return _runtime


def reset_runtime() -> None:
    """Forget inherited resources (called in each new worker child process)."""
    global _runtime
    if _runtime is not None and "engine" in _runtime.__dict__:
        _runtime.engine.dispose(close=False)
    _runtime = None
