"""Fine-tuning CLIP into a Human Preference Score model (the paper's recipe).

Per prompt, the scores (the model's scale times cos: 100 for HPS, ``logit_scale.exp()`` for a
PickScore-style ``hf-clip`` model) of its images go through a softmax and a cross-entropy on
the human choice. Only the last N vision and text blocks (plus the final norms and
projections) train. AdamW, linear warmup then cosine decay, gradient accumulation, bf16
autocast on CUDA, optional gradient checkpointing, DDP under torchrun. The training state is
checkpointed regularly and a run resumes exactly where it stopped (same data order, optimiser,
schedule and RNG state, so the result equals an uninterrupted run).

Both model families (open_clip and ``transformers`` CLIP) take this one path; what differs
(the blocks and heads, the forward call, the image geometry) is in
:mod:`hps.training.families`, and prompts are tokenised by the scorer's own tokenizer. The
model is saved in the project's format under the family's own tensor names, so that
:func:`hps.factory.load_model` (``hps score``, the registry) reads it back.

The training state is one ``train_state.safetensors`` file (see :mod:`hps.training.state`):
tensors as safetensors, everything else as JSON in its header; loading it never unpickles
anything. A ``train_state.pt`` left by an older version (a torch pickle, which can run code
when loaded) is refused, never opened: see :class:`TrainingStateError`.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hps.architectures import PreprocessMode
from hps.checkpoints import save_checkpoint, sha256_of_file
from hps.device import resolve_device
from hps.factory import LoadedModel, load_model
from hps.prefetch import default_decoders, make_decode_pool, prefetch_batches
from hps.preprocess import normalize
from hps.scoring import DEFAULT_SCORE_SCALE, make_tokenizer
from hps.training.families import TrainableParts, family_hooks
from hps.training.loss import preference_loss
from hps.training.manifests import PreferenceSet
from hps.training.state import (
    LEGACY_STATE_FILE,
    STATE_FILE,
    TrainingStateError,
    load_state,
    refuse_legacy_state,
    rng_state,
    save_state,
    set_rng_state,
)

__all__ = [
    "CURVE_FILE",
    "LEGACY_STATE_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "STATE_FILE",
    "TrainConfig",
    "TrainResult",
    "TrainingStateError",
    "cosine_with_warmup",
    "freeze_all_but_last_blocks",
    "plot_training_curve",
    "seed_everything",
    "train",
]

MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "training_curve.png"


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's."""

    lr: float = 1.7e-5
    weight_decay: float = 3.1e-3
    batch_size: int = 5  # preference sets per micro-batch (per process)
    epochs: int = 1
    steps: int | None = None  # optimiser steps; overrides epochs
    warmup_ratio: float = 0.05
    grad_accum: int = 1
    vision_layers: int = 10  # last N vision blocks trained
    text_layers: int = 6  # last N text blocks trained
    seed: int = 0
    grad_checkpointing: bool = False
    max_grad_norm: float | None = None
    checkpoint_every: int = 100  # optimiser steps between training-state checkpoints
    decoders: int | None = None  # decoding processes (default: none on CPU, most cores on GPU)
    device: str = "auto"
    preprocess: PreprocessMode | None = None


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    final_loss: float
    metrics_file: Path
    curve_file: Path | None
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    checkpoint_sha256: str | None = None  # of the model file written (None: stopped early)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def freeze_all_but_last_blocks(
    model: Any, vision_layers: int, text_layers: int, parts: TrainableParts | None = None
) -> int:
    """Train only the last blocks of each tower and the heads (final norms and projections);
    return the trainable count. ``parts`` names them (default: an open_clip CLIP's)."""
    parts = parts or family_hooks("open_clip").parts(model)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable: list[torch.nn.Module | torch.nn.Parameter] = list(parts.heads)
    for blocks, count in ((parts.vision_blocks, vision_layers), (parts.text_blocks, text_layers)):
        trainable += list(blocks)[max(0, len(blocks) - count) :] if count else []
    for item in trainable:
        for parameter in [item] if isinstance(item, torch.nn.Parameter) else item.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cosine_with_warmup(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class _Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device_request: str) -> tuple[_Distributed, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Distributed(), resolve_device(device_request)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_request in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return _Distributed(dist.get_rank(), dist.get_world_size(), local_rank), device


def _epoch_order(count: int, seed: int, epoch: int, part: _Distributed) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator).tolist()
    usable = len(order) - len(order) % part.world  # every rank gets the same number of sets
    return order[part.rank : usable : part.world]


def train(
    arch: str | None,
    base_checkpoint: str | Path | None,
    sets: Sequence[PreferenceSet],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    val_sets: Sequence[PreferenceSet] | None = None,
    trained_on: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, int, float], bool] | None = None,
    base_sha256: str | None = None,
) -> TrainResult:
    """Fine-tune ``arch`` (from ``base_checkpoint``, or a seeded random init) on ``sets``.

    Writes the training state, metrics (JSON lines), a training-curve PNG and the final model
    in the project's format into ``out_dir``. ``stop_after`` stops (checkpointed) after that
    many optimiser steps in this call; ``on_step(step, total, loss)`` returning False stops
    too (cancellation). A later call with ``resume=True`` continues exactly (from
    ``train_state.safetensors``; a pickled ``train_state.pt`` of an older version raises
    :class:`TrainingStateError` instead: it is never loaded). ``base_sha256`` pins the starting
    checkpoint (verified before it is read). ``TrainResult.checkpoint_sha256`` is the sha256
    of the model file written.
    """
    config = config or TrainConfig()
    if not sets:
        raise ValueError("no preference sets to train on")
    out = Path(out_dir)
    part, device = _init_distributed(config.device)
    if part.main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    loaded = load_model(arch, base_checkpoint, sha256=base_sha256)
    run = _TrainingRun(loaded, sets, out, config, part, device)
    run.resume_or_restart(resume)
    run.run_steps(progress=progress, stop_after=stop_after, on_step=on_step)
    return run.finalise(val_sets, trained_on, loaded.checkpoint)


def _steps_planned(count: int, config: TrainConfig, part: _Distributed) -> tuple[int, int]:
    """(total optimiser steps, warmup steps) for ``count`` sets split across the ranks."""
    per_rank = len(_epoch_order(count, config.seed, 0, part))
    micro_per_epoch = math.ceil(per_rank / config.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.grad_accum))
    total_steps = config.steps or steps_per_epoch * config.epochs
    return total_steps, int(total_steps * config.warmup_ratio)


@dataclass
class _Window:
    """The micro-batches accumulated towards the next optimiser step."""

    micro_batches: int = 0
    loss_sum: float = 0.0  # loss times sets, summed
    sets: int = 0

    def add(self, loss: float, sets: int) -> None:
        self.micro_batches += 1
        self.loss_sum += loss * sets
        self.sets += sets

    @property
    def mean_loss(self) -> float:
        return self.loss_sum / max(1, self.sets)


class _TrainingRun:
    """One call of :func:`train`: resume, optimiser steps, finalise."""

    # Set by run_steps: the decoding pool and the progress bar live only while stepping.
    pool: Executor | None
    autocast: AbstractContextManager[Any]
    bar: Any  # tqdm
    started: float  # when the current optimiser step's window began

    def __init__(
        self,
        loaded: LoadedModel,
        sets: Sequence[PreferenceSet],
        out: Path,
        config: TrainConfig,
        part: _Distributed,
        device: torch.device,
    ) -> None:
        self.sets, self.out, self.config, self.part, self.device = sets, out, config, part, device
        self.model = loaded.model.to(device).train()
        self.architecture = loaded.architecture
        self.family = family_hooks(self.architecture.family)
        self.preprocess: PreprocessMode = (
            config.preprocess or loaded.metadata.get("preprocess") or self.architecture.preprocess
        )
        # The scale the model scores with (100 for HPS; PickScore's logit_scale.exp()): the
        # loss's softmax sees the scores the scorer will give. logit_scale itself is frozen.
        self.score_scale = float(loaded.metadata.get("score_scale", DEFAULT_SCORE_SCALE))
        self.trainable_count = freeze_all_but_last_blocks(
            self.model,
            config.vision_layers,
            config.text_layers,
            self.family.parts(self.model),
        )
        if config.grad_checkpointing:
            self.family.grad_checkpointing(self.model)
        self.wrapped: torch.nn.Module = self.model
        if part.world > 1:
            self.wrapped = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.tokenizer = make_tokenizer(self.architecture)  # the scorer's own
        self.load_pixels = self.family.pixels(self.architecture, self.preprocess)
        self.total_steps, warmup = _steps_planned(len(sets), config, part)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.parameters, lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_with_warmup(self.total_steps, warmup)
        )
        self.state_path = out / STATE_FILE
        self.metrics_path = out / METRICS_FILE
        self.step, self.epoch, self.micro_done = 0, 0, 0
        self.steps_this_call = 0
        self.last_loss = float("nan")
        self.stopped_early = False

    # -- resume -------------------------------------------------------------------------------

    def resume_or_restart(self, resume: bool) -> None:
        """Continue from the saved training state when asked and present, else start over."""
        if resume and not self.state_path.is_file():
            refuse_legacy_state(self.out)
        if resume and self.state_path.is_file():
            self._resume()
        elif self.part.main and self.metrics_path.exists():
            self.metrics_path.unlink()

    def _resume(self) -> None:
        saved = load_state(self.state_path)
        self.model.load_state_dict(saved["trainable"], strict=False)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.step, self.epoch, self.micro_done = saved["step"], saved["epoch"], saved["micro_done"]
        set_rng_state(saved["rng"])
        if self.part.main and self.metrics_path.exists():  # drop metrics logged after the state
            kept = [
                line
                for line in self.metrics_path.read_text().splitlines()
                if line and json.loads(line)["step"] <= self.step
            ]
            self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _save_training_state(self) -> None:
        if not self.part.main:
            return
        trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
        trainable = {
            name: tensor.detach().cpu()
            for name, tensor in self.model.state_dict().items()
            if name in trained
        }
        save_state(
            self.state_path,
            {
                "trainable": trainable,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "micro_done": self.micro_done,
                "rng": rng_state(),
                "config": asdict(self.config),
            },
        )
        # A pickled state from an older version is superseded: nothing may load it later.
        (self.out / LEGACY_STATE_FILE).unlink(missing_ok=True)

    # -- steps --------------------------------------------------------------------------------

    def run_steps(
        self,
        *,
        progress: bool,
        stop_after: int | None,
        on_step: Callable[[int, int, float], bool] | None,
    ) -> None:
        """Train epoch after epoch until the last step, ``stop_after`` or ``on_step`` says so."""
        config = self.config
        decoders = default_decoders(self.device) if config.decoders is None else config.decoders
        self.pool = make_decode_pool(decoders)
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else nullcontext()
        )
        from tqdm import tqdm

        self.bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (progress and self.part.main),
            unit="step",
            desc="training HPS",
        )
        self.started = time.perf_counter()
        while self.step < self.total_steps:
            if self._run_epoch(stop_after, on_step):
                break
            self.epoch += 1
            self.micro_done = 0
        self.bar.close()
        if self.pool is not None:
            self.pool.shutdown()

    def _run_epoch(
        self, stop_after: int | None, on_step: Callable[[int, int, float], bool] | None
    ) -> bool:
        """The rest of the current epoch; True when training stops for this call."""
        config = self.config
        order = _epoch_order(len(self.sets), config.seed, self.epoch, self.part)
        micro_batches = [
            [self.sets[i] for i in order[start : start + config.batch_size]]
            for start in range(0, len(order), config.batch_size)
        ]
        remaining = micro_batches[self.micro_done :]
        image_lists = [[img for s in batch for img in s.images] for batch in remaining]
        loader = prefetch_batches(
            image_lists,
            self.load_pixels,
            executor=self.pool,
            pin_memory=self.device.type == "cuda",
        )
        window = _Window()
        for batch, pixels in zip(remaining, loader, strict=True):
            loss = self._forward_loss(batch, pixels)
            (loss / config.grad_accum).backward()
            self.micro_done += 1
            window.add(loss.item(), len(batch))
            if window.micro_batches < config.grad_accum and self.micro_done < len(micro_batches):
                continue
            self._optimiser_step(window)
            window = _Window()
            if self._stop_after_step(stop_after, on_step):
                return True
        return self.stopped_early or self.step >= self.total_steps

    def _forward_loss(self, batch: list[PreferenceSet], pixels: torch.Tensor) -> torch.Tensor:
        """The preference loss of one micro-batch (its graph kept for the backward pass)."""
        device = self.device
        sizes = [len(s.images) for s in batch]
        targets = torch.zeros(len(batch), max(sizes))
        for row, preference_set in enumerate(batch):
            targets[row, : len(preference_set.target)] = torch.tensor(preference_set.target)
        tokens = self.tokenizer([s.prompt for s in batch]).to(device)
        with self.autocast:
            image_features, text_features = self.family.features(
                self.wrapped, normalize(pixels.to(device, non_blocking=True), torch.float32), tokens
            )
            per_image_text = torch.repeat_interleave(
                text_features, torch.tensor(sizes, device=device), dim=0
            )
            logits = self.score_scale * (image_features * per_image_text).sum(dim=-1)
            return preference_loss(logits, sizes, targets.to(device))

    def _optimiser_step(self, window: _Window) -> None:
        """Clip, step optimiser and schedule, and log the step's metrics."""
        if self.config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.steps_this_call += 1
        self.last_loss = window.mean_loss
        if self.part.main:
            self._log_metrics(window.sets)
        self.started = time.perf_counter()

    def _log_metrics(self, window_sets: int) -> None:
        elapsed = time.perf_counter() - self.started
        row = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": self.last_loss,
            "lr": self.scheduler.get_last_lr()[0],
            "sets_per_s": window_sets * self.part.world / max(elapsed, 1e-9),
        }
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{self.last_loss:.4f}")

    def _stop_after_step(
        self, stop_after: int | None, on_step: Callable[[int, int, float], bool] | None
    ) -> bool:
        """Checkpoint when due; True when this call stops (last step, limit or cancel)."""
        keep_going = on_step(self.step, self.total_steps, self.last_loss) if on_step else True
        finished = self.step >= self.total_steps
        if self.step % self.config.checkpoint_every == 0 or finished:
            self._save_training_state()
        if finished:
            return True
        if (stop_after is not None and self.steps_this_call >= stop_after) or not keep_going:
            self._save_training_state()
            self.stopped_early = True
            return True
        return False

    # -- finalise -----------------------------------------------------------------------------

    def finalise(
        self,
        val_sets: Sequence[PreferenceSet] | None,
        trained_on: dict[str, Any] | None,
        base_checkpoint: str | Path | None,
    ) -> TrainResult:
        """Evaluate and write the model, its sha256 and the curve (main rank, unless stopped)."""
        model_path = self.out / MODEL_FILE
        curve_path: Path | None = None
        model_sha256: str | None = None
        extra: dict[str, Any] = {"trainable_parameters": self.trainable_count}
        if self.part.main and not self.stopped_early:
            self.model.eval()
            if val_sets:
                extra["validation"] = asdict(self._evaluate(val_sets))
            metadata = {
                "architecture": self.architecture.name,
                "preprocess": self.preprocess,
                "score_scale": self.score_scale,
                "trained_on": trained_on or {"sets": len(self.sets)},
                "metrics": extra.get("validation", {}),
                "train_config": asdict(self.config),
                "steps": self.step,
                "final_loss": self.last_loss,
                "base": _describe_base(base_checkpoint, self.config.seed),
            }
            save_checkpoint(model_path, self.model, metadata)
            model_sha256 = sha256_of_file(model_path)
            curve_path = plot_training_curve(self.metrics_path, self.out / CURVE_FILE)
        if self.part.world > 1:
            dist.barrier()
        return TrainResult(
            model_path,
            self.step,
            self.last_loss,
            self.metrics_path,
            curve_path,
            self.stopped_early,
            extra,
            checkpoint_sha256=model_sha256,
        )

    def _evaluate(self, val_sets: Sequence[PreferenceSet]) -> Any:
        from hps.evaluation import evaluate
        from hps.scoring import HpsScorer

        scorer = HpsScorer(
            self.model,
            self.architecture,
            device=self.device,
            dtype=torch.float32,
            preprocess=self.preprocess,
            score_scale=self.score_scale,
        )
        return evaluate(scorer, val_sets)


def _describe_base(base_checkpoint: str | Path | None, seed: int) -> dict[str, Any]:
    if base_checkpoint is None:
        return {"kind": "random-init", "seed": seed}
    path = Path(base_checkpoint)
    return {"kind": "checkpoint", "path": str(path.resolve()), "sha256": sha256_of_file(path)}


def plot_training_curve(metrics_path: Path, png_path: Path) -> Path | None:
    """Loss (and learning rate) against optimiser steps, as a PNG."""
    if not metrics_path.exists():
        return None
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    figure, loss_axis = plt.subplots(figsize=(7, 4), dpi=110)
    loss_axis.plot(steps, [row["loss"] for row in rows], color="tab:blue", label="loss")
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("preference loss (cross-entropy)", color="tab:blue")
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [row["lr"] for row in rows], color="tab:orange", alpha=0.6)
    lr_axis.set_ylabel("learning rate", color="tab:orange")
    loss_axis.set_title("HPS fine-tuning")
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return png_path
