"""Models loaded once per worker process, keyed by model version: promoting a model takes
effect on the next task, with no restart, and a retired one is evicted after a while."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ModelFileMissing(FileNotFoundError):
    """The registry names a checkpoint file that is not there."""


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to know of a registered model version."""

    id: int
    name: str
    architecture: str
    checkpoint_key: str


class ModelCache:
    """An LRU of ready scorers (at most ``capacity`` models in memory)."""

    def __init__(self, models_dir: Path, device: str = "auto", capacity: int = 2) -> None:
        self.models_dir = models_dir
        self.device = device
        self.capacity = capacity
        self._scorers: OrderedDict[tuple[int, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def checkpoint_path(self, checkpoint_key: str) -> Path:
        """Where a registry checkpoint key points (relative keys live under models_dir)."""
        path = Path(checkpoint_key)
        return path if path.is_absolute() else self.models_dir / path

    def scorer(self, version: ModelRef) -> Any:
        """The scorer of ``version``, loading it on first use."""
        key = (version.id, version.checkpoint_key)
        with self._lock:
            if key in self._scorers:
                self._scorers.move_to_end(key)
                return self._scorers[key]
            path = self.checkpoint_path(version.checkpoint_key)
            if not path.is_file():
                raise ModelFileMissing(
                    f"the checkpoint of model version {version.id} is missing: {path}"
                )
            from hps.factory import build_scorer
            from worker.metrics import model_load_timer

            with model_load_timer("hps"):
                scorer = build_scorer(version.architecture, path, device=self.device)
            self.loads += 1
            self._scorers[key] = scorer
            while len(self._scorers) > self.capacity:
                _, evicted = self._scorers.popitem(last=False)
                evicted.close()
            return scorer
