"""Fine-tuning CLIP into a Human Preference Score model (the paper's recipe).

Per prompt, the scores (100 * cos) of its images go through a softmax and a cross-entropy on
the human choice. Only the last N vision and text blocks (plus the final norms and
projections) train. AdamW, linear warmup then cosine decay, gradient accumulation, bf16
autocast on CUDA, optional gradient checkpointing, DDP under torchrun. The training state is
checkpointed regularly and a run resumes exactly where it stopped (same data order, optimiser,
schedule and RNG state, so the result equals an uninterrupted run).

The training state is one ``train_state.safetensors`` file: every tensor (trainable weights,
optimiser moments, torch RNG states) as a safetensors tensor, and everything else (step, epoch,
scheduler, optimiser hyper-parameters, Python and NumPy RNG states, config) as JSON in its
header. Loading it never unpickles anything. A ``train_state.pt`` left by an older version (a
torch pickle, which can run code when loaded) is refused, never opened: see
:class:`TrainingStateError`.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hps.architectures import PreprocessMode
from hps.checkpoints import save_checkpoint, sha256_of_file
from hps.device import resolve_device
from hps.factory import load_model
from hps.prefetch import default_decoders, make_decode_pool, prefetch_batches
from hps.preprocess import normalize, shape_pixels
from hps.scoring import DEFAULT_SCORE_SCALE
from hps.training.loss import preference_loss
from hps.training.manifests import PreferenceSet

STATE_FILE = "train_state.safetensors"
LEGACY_STATE_FILE = "train_state.pt"  # pickled by older versions: refused, never loaded
STATE_METADATA_KEY = "hps_train_state"
STATE_FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "training_curve.png"


class TrainingStateError(ValueError):
    """The saved training state cannot be resumed from; the message says why and what to do."""


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


def freeze_all_but_last_blocks(model: Any, vision_layers: int, text_layers: int) -> int:
    """Train only the last blocks of each tower and the heads; return the trainable count."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable: list[torch.nn.Module] = []
    visual = model.visual
    blocks = visual.transformer.resblocks
    trainable += list(blocks)[max(0, len(blocks) - vision_layers) :] if vision_layers else []
    text_blocks = model.transformer.resblocks
    trainable += list(text_blocks)[max(0, len(text_blocks) - text_layers) :] if text_layers else []
    trainable += [visual.ln_post, model.ln_final]
    for module in trainable:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    for name in ("proj",):
        if isinstance(getattr(visual, name, None), torch.nn.Parameter):
            getattr(visual, name).requires_grad_(True)
    text_projection = getattr(model, "text_projection", None)
    if isinstance(text_projection, torch.nn.Parameter):
        text_projection.requires_grad_(True)
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


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` under their path in the tree.

    Tagged objects keep what JSON would lose: tuples, dicts with non-string keys (the
    optimiser's parameter ids) and NumPy arrays (NumPy's RNG state)."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, f"{path}/key{i}", tensors), _encode(v, f"{path}/{k}", tensors)]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise TypeError(f"cannot keep a {type(value).__name__} in the training state ({path})")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _save_state(path: Path, payload: dict[str, Any]) -> None:
    """Write the training state (safetensors + JSON header), atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    document = {"format_version": STATE_FORMAT_VERSION, "state": _encode(payload, "", tensors)}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={STATE_METADATA_KEY: json.dumps(document)})
    partial.replace(path)


def _load_state(path: Path) -> dict[str, Any]:
    """Read a state written by :func:`_save_state` (nothing in it is executed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        document = json.loads(header[STATE_METADATA_KEY])
        if document.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"format version {document.get('format_version')!r}")
        state = _decode(document["state"], tensors)
    except Exception as exc:
        raise TrainingStateError(
            f"{path}: unreadable training state ({type(exc).__name__}: {exc}); "
            "delete it or pass --no-resume to start over"
        ) from None
    if not isinstance(state, dict):
        raise TrainingStateError(f"{path}: unreadable training state (not a mapping)")
    return state


def _refuse_legacy_state(out: Path) -> None:
    """A pickled state from an older version is refused, never unpickled (it can run code)."""
    legacy = out / LEGACY_STATE_FILE
    if legacy.exists():
        raise TrainingStateError(
            f"{legacy}: a training state in the old pickle format, which is no longer loaded "
            "(unpickling a file can run any code in it); resuming from it is not possible: "
            "delete it (or pass --no-resume) to train from the start"
        )


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
    model = loaded.model.to(device).train()
    architecture = loaded.architecture
    preprocess = config.preprocess or loaded.metadata.get("preprocess") or architecture.preprocess
    trainable_count = freeze_all_but_last_blocks(model, config.vision_layers, config.text_layers)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)  # type: ignore[operator]
    wrapped: torch.nn.Module = model
    if part.world > 1:
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer(context_length=architecture.context_length)
    per_rank = len(_epoch_order(len(sets), config.seed, 0, part))
    micro_per_epoch = math.ceil(per_rank / config.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.grad_accum))
    total_steps = config.steps or steps_per_epoch * config.epochs
    warmup = int(total_steps * config.warmup_ratio)

    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_with_warmup(total_steps, warmup)
    )

    step, epoch, micro_done = 0, 0, 0
    state_path = out / STATE_FILE
    metrics_path = out / METRICS_FILE
    if resume and not state_path.is_file():
        _refuse_legacy_state(out)
    if resume and state_path.is_file():
        saved = _load_state(state_path)
        model.load_state_dict(saved["trainable"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        step, epoch, micro_done = saved["step"], saved["epoch"], saved["micro_done"]
        _set_rng_state(saved["rng"])
        if part.main and metrics_path.exists():  # drop metrics logged after that checkpoint
            kept = [
                line
                for line in metrics_path.read_text().splitlines()
                if line and json.loads(line)["step"] <= step
            ]
            metrics_path.write_text("".join(line + "\n" for line in kept))
    elif part.main and metrics_path.exists():
        metrics_path.unlink()

    def save_training_state() -> None:
        if not part.main:
            return
        trainable = {
            name: tensor.detach().cpu()
            for name, tensor in model.state_dict().items()
            if name in {n for n, p in model.named_parameters() if p.requires_grad}
        }
        _save_state(
            state_path,
            {
                "trainable": trainable,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "epoch": epoch,
                "micro_done": micro_done,
                "rng": _rng_state(),
                "config": asdict(config),
            },
        )
        # A pickled state from an older version is superseded: nothing may load it later.
        (out / LEGACY_STATE_FILE).unlink(missing_ok=True)

    load_pixels = partial(shape_pixels, size=architecture.image_size, mode=preprocess)
    decoders = default_decoders(device) if config.decoders is None else config.decoders
    pool = make_decode_pool(decoders)

    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
    )
    from tqdm import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (progress and part.main),
        unit="step",
        desc="training HPS",
    )
    last_loss = float("nan")
    stopped_early = False
    steps_this_call = 0
    started = time.perf_counter()
    while step < total_steps:
        order = _epoch_order(len(sets), config.seed, epoch, part)
        micro_batches = [
            [sets[i] for i in order[start : start + config.batch_size]]
            for start in range(0, len(order), config.batch_size)
        ]
        remaining = micro_batches[micro_done:]
        image_lists = [[img for s in batch for img in s.images] for batch in remaining]
        loader = prefetch_batches(
            image_lists, load_pixels, executor=pool, pin_memory=device.type == "cuda"
        )
        accumulated, window_loss, window_sets = 0, 0.0, 0
        for batch, pixels in zip(remaining, loader, strict=True):
            sizes = [len(s.images) for s in batch]
            targets = torch.zeros(len(batch), max(sizes))
            for row, preference_set in enumerate(batch):
                targets[row, : len(preference_set.target)] = torch.tensor(preference_set.target)
            tokens = tokenizer([s.prompt for s in batch]).to(device)
            with autocast:
                image_features, text_features, *_ = wrapped(
                    normalize(pixels.to(device, non_blocking=True), torch.float32), tokens
                )
                per_image_text = torch.repeat_interleave(
                    text_features, torch.tensor(sizes, device=device), dim=0
                )
                logits = DEFAULT_SCORE_SCALE * (image_features * per_image_text).sum(dim=-1)
                loss = preference_loss(logits, sizes, targets.to(device))
            (loss / config.grad_accum).backward()
            micro_done += 1
            accumulated += 1
            window_loss += loss.item() * len(batch)
            window_sets += len(batch)
            if accumulated < config.grad_accum and micro_done < len(micro_batches):
                continue
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_call += 1
            last_loss = window_loss / max(1, window_sets)
            if part.main:
                elapsed = time.perf_counter() - started
                with metrics_path.open("a") as handle:
                    handle.write(
                        json.dumps(
                            {
                                "step": step,
                                "epoch": epoch,
                                "loss": last_loss,
                                "lr": scheduler.get_last_lr()[0],
                                "sets_per_s": window_sets * part.world / max(elapsed, 1e-9),
                            }
                        )
                        + "\n"
                    )
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}")
            started = time.perf_counter()
            accumulated, window_loss, window_sets = 0, 0.0, 0
            keep_going = on_step(step, total_steps, last_loss) if on_step else True
            if step % config.checkpoint_every == 0 or step >= total_steps:
                save_training_state()
            if step >= total_steps:
                break
            if (stop_after is not None and steps_this_call >= stop_after) or not keep_going:
                save_training_state()
                stopped_early = True
                break
        if stopped_early or step >= total_steps:
            break
        epoch += 1
        micro_done = 0
    bar.close()
    if pool is not None:
        pool.shutdown()

    model_path = out / MODEL_FILE
    curve_path: Path | None = None
    model_sha256: str | None = None
    extra: dict[str, Any] = {"trainable_parameters": trainable_count}
    if part.main and not stopped_early:
        model.eval()
        if val_sets:
            from hps.evaluation import evaluate
            from hps.scoring import HpsScorer

            scorer = HpsScorer(
                model, architecture, device=device, dtype=torch.float32, preprocess=preprocess
            )
            extra["validation"] = asdict(evaluate(scorer, val_sets))
        metadata = {
            "architecture": architecture.name,
            "preprocess": preprocess,
            "score_scale": DEFAULT_SCORE_SCALE,
            "trained_on": trained_on or {"sets": len(sets)},
            "metrics": extra.get("validation", {}),
            "train_config": asdict(config),
            "steps": step,
            "final_loss": last_loss,
            "base": _describe_base(base_checkpoint, config.seed),
        }
        save_checkpoint(model_path, model, metadata)
        model_sha256 = sha256_of_file(model_path)
        curve_path = plot_training_curve(metrics_path, out / CURVE_FILE)
    if part.world > 1:
        dist.barrier()
    return TrainResult(
        model_path,
        step,
        last_loss,
        metrics_path,
        curve_path,
        stopped_early,
        extra,
        checkpoint_sha256=model_sha256,
    )


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
