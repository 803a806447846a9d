"""The Stable Diffusion pipeline of a worker process, loaded once, with the active LoRA
switched in by model version (or removed) before each generation. A LoRA's weights file is
verified against the sha256 it was registered with before it is switched in."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from worker.errors import JobFailure
from worker.model_cache import ModelRef, file_changed


def load_configured_pipeline(source: str, device: str, models_dir: Path | None = None) -> Any:
    """The worker's SD_PIPELINE (``tiny``, ``toy``, a local path, or a catalogue name fetched
    into ``models_dir`` by ``hps models fetch``, see
    :func:`hps.diffusion.pipelines.open_pipeline`); a job fails when none is configured."""
    from hps.diffusion.pipelines import open_pipeline

    if not source:
        raise JobFailure("no Stable Diffusion model configured: set SD_PIPELINE to its folder")
    return open_pipeline(source, device, models_dir=models_dir)


def verify_lora(lora: ModelRef, folder: Path) -> None:
    """Raise ModelFileChanged unless the folder's weights file has the registered sha256."""
    if not lora.checkpoint_sha256:
        return
    from hps.checkpoints import LORA_WEIGHTS_FILE, sha256_of_file

    weights = folder / LORA_WEIGHTS_FILE
    if not weights.is_file():
        raise JobFailure(f"the files of LoRA version {lora.id} are missing: {weights.name}")
    actual = sha256_of_file(weights)
    if actual != lora.checkpoint_sha256:
        raise file_changed(lora, actual, lora.checkpoint_sha256)


class PipelineCache:
    def __init__(self, source: str, device: str, models_dir: Path) -> None:
        self.source = source
        self.device = device
        self.models_dir = models_dir
        self._pipe: Any = None
        self._active: str | None = None
        self._lock = threading.Lock()

    def pipeline(self, lora: ModelRef | None) -> Any:
        """The pipeline with ``lora`` active (None: the base model)."""
        from hps.diffusion.pipelines import unload_loras, use_lora
        from worker.metrics import model_load_timer

        with self._lock:
            if self._pipe is None:
                with model_load_timer("sd_pipeline"):
                    self._pipe = load_configured_pipeline(self.source, self.device, self.models_dir)
            wanted = f"lora-{lora.id}" if lora else None
            if wanted != self._active:
                if lora is None:
                    unload_loras(self._pipe)
                else:
                    folder = Path(lora.checkpoint_key)
                    folder = folder if folder.is_absolute() else self.models_dir / folder
                    if not folder.is_dir():
                        raise JobFailure(
                            f"the files of LoRA version {lora.id} are missing: {folder}"
                        )
                    verify_lora(lora, folder)
                    with model_load_timer("lora"):
                        use_lora(self._pipe, folder, wanted or "")
                self._active = wanted
            return self._pipe
