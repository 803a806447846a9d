"""Per-process resources of a worker, created lazily after the fork (never in the parent:
database connections and CUDA must not cross a fork)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from config import get_settings
from db.resources import Resources
from worker.model_cache import ModelCache

if TYPE_CHECKING:
    from worker.pipeline_cache import PipelineCache


@dataclass
class Runtime(Resources):
    """The shared resources (database, image store) plus the worker's model caches."""

    @cached_property
    def models(self) -> ModelCache:
        assert self.settings.models_dir is not None
        return ModelCache(
            self.settings.models_dir,
            self.settings.worker_device,
            compile_mode=self.settings.score_compile or None,
        )

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
    if _runtime is not None:
        _runtime.dispose(close=False)
    _runtime = None
