"""Training throughput of hps/ against a bare forward+backward of the same trainable subset.

    .venv/bin/python -m bench.train [--arch small] [--sets 64] [--batch 8] [--steps 6] [--json]
    .venv/bin/python -m bench.train --device cuda --arch hps-v1 --batch 32 --steps 12

- product: ``hps.training.train`` on preference sets of 4 PNGs (512 px, in memory), decoding,
  tokenising, loss, optimiser, metrics and checkpointing included;
- product from stored model inputs: the same, the sets' images being their stored model inputs
  (``media.model_inputs``: decoded once at intake, longest side at the model resolution), as a
  training snapshot gives them (``--no-inputs`` skips this row);
- bare: the same model with the same blocks unfrozen, pixels and tokens prepared on the device
  in advance, a loop of forward + preference loss + backward + AdamW step.
Reported: preference sets per second (steady state, first step excluded) and peak memory
(GPU: allocated by torch; CPU: the process's peak RSS after each phase).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import synthetic_png
from hps.architectures import get_architecture
from hps.device import resolve_device
from hps.factory import load_model
from hps.preprocess import load_image, normalize, to_uint8_tensor
from hps.training.loss import preference_loss
from hps.training.manifests import PreferenceSet, one_hot
from hps.training.trainer import TrainConfig, freeze_all_but_last_blocks, train
from media.model_inputs import ModelInputSpec, make_model_input

SET_SIZE = 4


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_sets(count: int) -> list[PreferenceSet]:
    pngs = [synthetic_png(i) for i in range(min(count * SET_SIZE, 64))]
    return [
        PreferenceSet(
            f"prompt {i}: a castle on a hill",
            tuple(pngs[(i * SET_SIZE + j) % len(pngs)] for j in range(SET_SIZE)),
            one_hot(i % SET_SIZE, SET_SIZE),
        )
        for i in range(count)
    ]


def as_model_inputs(sets: list[PreferenceSet], size: int) -> list[PreferenceSet]:
    """The same sets with each image replaced by its stored model input (pad, ``size``)."""
    spec = ModelInputSpec("pad", size)
    made: dict[Any, bytes] = {}  # the bench's sets hold PNG bytes
    for s in sets:
        for img in s.images:
            if img not in made:
                made[img] = make_model_input(load_image(img), spec)
    return [PreferenceSet(s.prompt, tuple(made[img] for img in s.images), s.target) for s in sets]


def product_run(arch: str, sets: list[PreferenceSet], config: TrainConfig) -> tuple[float, float]:
    """(median sets/s after the first step, peak memory MB) of ``hps.training.train``."""
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        train(arch, None, sets, out, config, progress=False)
        rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(row["sets_per_s"] for row in rows[1:]), peak_memory_mb(device)


def bare_loop(
    arch: str,
    sets: list[PreferenceSet],
    batch: int,
    steps: int,
    device: torch.device,
    grad_checkpointing: bool,
) -> float:
    from open_clip.tokenizer import SimpleTokenizer

    loaded = load_model(arch)
    model: Any = loaded.model.to(device).train()
    freeze_all_but_last_blocks(model, 10, 6)
    if grad_checkpointing:
        model.set_grad_checkpointing(True)
    size = loaded.architecture.image_size
    chunk = sets[:batch]
    pixels = torch.stack(
        [to_uint8_tensor(load_image(img), size, "pad") for s in chunk for img in s.images]
    )
    pixels = normalize(pixels.to(device), torch.float32)
    tokens = SimpleTokenizer()([s.prompt for s in chunk]).to(device)
    targets = torch.tensor([s.target for s in chunk], device=device)
    sizes = [SET_SIZE] * len(chunk)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        if autocast is not None:
            with autocast:
                image, text, *_ = model(pixels, tokens)
        else:
            image, text, *_ = model(pixels, tokens)
        logits = 100 * (image * torch.repeat_interleave(text, SET_SIZE, dim=0)).sum(-1)
        preference_loss(logits, sizes, targets).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times[1:])


def measure(
    args: argparse.Namespace, device: torch.device, sets: list[PreferenceSet]
) -> dict[str, Any]:
    """bare, product and product-from-inputs, ``args.rounds`` times in turn: the median rate of
    each, and the median of each round's ratio (neighbours in time, so a busy host skews a
    round's rows alike)."""
    config = TrainConfig(
        batch_size=args.batch,
        steps=args.steps,
        device=str(device),
        checkpoint_every=10**9,
        grad_checkpointing=args.grad_checkpointing,
    )
    inputs = (
        None if args.no_inputs else as_model_inputs(sets, get_architecture(args.arch).image_size)
    )
    rows: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        bare = bare_loop(args.arch, sets, args.batch, args.steps, device, args.grad_checkpointing)
        rows.setdefault("bare_sets_per_s", []).append(bare)
        rows.setdefault("bare_peak_mb", []).append(peak_memory_mb(device))
        product, peak = product_run(args.arch, sets, config)
        rows.setdefault("product_sets_per_s", []).append(product)
        rows.setdefault("product_peak_mb", []).append(peak)
        rows.setdefault("product_vs_bare", []).append(product / bare)
        if inputs is not None:
            stored, peak = product_run(args.arch, inputs, config)
            rows.setdefault("product_from_inputs_sets_per_s", []).append(stored)
            rows.setdefault("inputs_peak_mb", []).append(peak)
            rows.setdefault("product_from_inputs_vs_bare", []).append(stored / bare)
    return {name: statistics.median(values) for name, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description="training throughput")
    parser.add_argument("--arch", default="small")
    parser.add_argument("--batch", type=int, default=8, help="preference sets per step")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-inputs", action="store_true", help="skip the stored-inputs row")
    parser.add_argument("--rounds", type=int, default=1, help="repeat all rows; report medians")
    args = parser.parse_args()
    device = resolve_device(args.device)
    sets = make_sets(args.batch * args.steps)

    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "arch": args.arch,
        "batch_sets": args.batch,
        "images_per_step": args.batch * SET_SIZE,
    }
    result.update(measure(args, device, sets))
    bare, product = result["bare_sets_per_s"], result["product_sets_per_s"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"device {result['device']}  arch {args.arch}  "
        f"{args.batch} sets x {SET_SIZE} images per step"
    )
    print(f"{'measurement':45} {'sets/s':>8} {'peak MB':>9}")
    print(f"{'bare forward+backward (pre-decoded)':45} {bare:>8.2f} {result['bare_peak_mb']:>9.0f}")
    print(f"{'product hps.training.train':45} {product:>8.2f} {result['product_peak_mb']:>9.0f}")
    if "product_from_inputs_sets_per_s" in result:
        print(
            f"{'product from stored model inputs':45} "
            f"{result['product_from_inputs_sets_per_s']:>8.2f} {result['inputs_peak_mb']:>9.0f}"
        )
    print(f"product / bare = {result['product_vs_bare']:.2f} (median of {args.rounds} rounds)")
    if "product_from_inputs_vs_bare" in result:
        print(f"product from stored inputs / bare = {result['product_from_inputs_vs_bare']:.2f}")


if __name__ == "__main__":
    main()
