"""Models loaded once per worker process, keyed by model version: promoting a model takes
effect on the next task, with no restart, and a retired one is evicted after a while.

A checkpoint is verified against the sha256 it was registered with before it is loaded: a file
swapped or corrupted since is refused (:class:`ModelFileChanged`), never loaded."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from db.models import ModelKind
from db.registry import get_active_model, get_usable_model_version
from db.scope import Scope

if TYPE_CHECKING:
    from hps.scoring import HpsScorer


class ModelFileMissing(FileNotFoundError):
    """The registry names a checkpoint file that is not there."""


class ModelFileChanged(ModelFileMissing):
    """The checkpoint file is not the one registered (its sha256 differs): the registered file
    is, in effect, missing. Refused before anything is read from it."""


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to know of a registered model version."""

    id: int
    name: str
    architecture: str
    checkpoint_key: str
    checkpoint_sha256: str | None = None  # None: registered before sha256s were recorded

    @classmethod
    def of(cls, version: Any) -> ModelRef:
        """The reference to a ``db.models.ModelVersion`` row (or anything with its fields)."""
        return cls(
            version.id,
            version.name,
            version.architecture,
            version.checkpoint_key,
            getattr(version, "checkpoint_sha256", None),
        )


def model_ref(
    session: Session,
    scope: Scope,
    kind: ModelKind = ModelKind.hps,
    *,
    version_id: int | None = None,
) -> ModelRef | None:
    """The model a job of ``scope`` works with: version ``version_id`` when it names one
    (if the scope may use it), else the ``kind`` model the scope uses (its guild's active
    one, else the global one); None when there is none."""
    version = (
        get_usable_model_version(session, scope, version_id)
        if version_id is not None
        else get_active_model(session, kind, scope.guild_id)
    )
    return None if version is None else ModelRef.of(version)


def file_changed(version: ModelRef, actual: str, expected: str) -> ModelFileChanged:
    """The error for a file of ``version`` that hashes to ``actual`` (short, no path)."""
    return ModelFileChanged(
        f"the checkpoint of model version {version.id} is not the registered file "
        f"(sha256 {actual[:12]}..., expected {expected[:12]}...); refusing to load it"
    )


class ModelCache:
    """An LRU of ready scorers (at most ``capacity`` models in memory)."""

    def __init__(
        self,
        models_dir: Path,
        device: str = "auto",
        capacity: int = 2,
        compile_mode: str | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.device = device
        self.compile_mode = compile_mode or None
        self.capacity = capacity
        self._scorers: OrderedDict[tuple[int, str], HpsScorer] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def checkpoint_path(self, checkpoint_key: str) -> Path:
        """Where a registry checkpoint key points (relative keys live under models_dir)."""
        path = Path(checkpoint_key)
        return path if path.is_absolute() else self.models_dir / path

    def _existing_path(self, version: ModelRef) -> Path:
        path = self.checkpoint_path(version.checkpoint_key)
        if not path.is_file():
            raise ModelFileMissing(
                f"the checkpoint of model version {version.id} is missing: {path}"
            )
        return path

    def verified_path(self, version: ModelRef) -> Path:
        """The checkpoint file of ``version``, after checking it is the registered file
        (ModelFileMissing / ModelFileChanged otherwise). For code that loads it itself."""
        path = self._existing_path(version)
        if version.checkpoint_sha256:
            from hps.checkpoints import sha256_of_file

            actual = sha256_of_file(path)
            if actual != version.checkpoint_sha256:
                raise file_changed(version, actual, version.checkpoint_sha256)
        return path

    def scorer(self, version: ModelRef) -> HpsScorer:
        """The scorer of ``version``, loading it on first use."""
        key = (version.id, version.checkpoint_key)
        with self._lock:
            if key in self._scorers:
                self._scorers.move_to_end(key)
                return self._scorers[key]
            path = self._existing_path(version)
            from hps.checkpoints import ChecksumMismatch
            from hps.scoring import build_scorer
            from worker.metrics import model_load_timer

            with model_load_timer("hps"):
                try:
                    scorer = build_scorer(
                        version.architecture,
                        path,
                        device=self.device,
                        sha256=version.checkpoint_sha256,
                        compile_mode=self.compile_mode,
                    )
                except ChecksumMismatch as exc:
                    raise file_changed(version, exc.actual, exc.expected) from None
            self.loads += 1
            self._scorers[key] = scorer
            while len(self._scorers) > self.capacity:
                _, evicted = self._scorers.popitem(last=False)
                evicted.close()
            return scorer
