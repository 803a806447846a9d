"""Stable Diffusion throughput: generation images/s and LoRA training steps/s.

    .venv/bin/python -m bench.generate                       # tiny pipeline, CPU
    python3 -m bench.generate --sd15 --device cuda --json    # SD-1.5-sized, random weights, fp16

The SD-1.5-sized pipeline has the real architecture (UNet 860M, VAE, CLIP ViT-L/14 text encoder)
with random weights, built in code: timing only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from hps.device import resolve_device
from hps.diffusion.lora_training import Example, LoraConfig, train_lora
from hps.diffusion.pipelines import build_sd15_sized_pipeline, build_tiny_pipeline, generate


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description="generation and LoRA throughput")
    parser.add_argument("--sd15", action="store_true", help="SD-1.5-sized pipeline at 512 px")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--lora-steps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = (build_sd15_sized_pipeline() if args.sd15 else build_tiny_pipeline()).to(device, dtype)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor

    generate(pipe, "warm up", list(range(args.batch)), steps=2, batch_size=args.batch)
    sync(device)
    start = time.perf_counter()
    images = generate(
        pipe,
        "a castle on a hill at dusk, highly detailed",
        list(range(args.images)),
        steps=args.steps,
        batch_size=args.batch,
    )
    sync(device)
    gen_s = time.perf_counter() - start

    examples = [Example(g.image, "a castle on a hill at dusk") for g in images]
    stamps: list[float] = []

    def on_step(_step: int, _total: int, _loss: float) -> bool:
        sync(device)
        stamps.append(time.perf_counter())
        return True

    start = time.perf_counter()
    train_lora(
        pipe,
        examples,
        LoraConfig(steps=args.lora_steps, batch_size=args.batch, lr=1e-5),
        on_step=on_step,
    )
    step_s = statistics.median(b - a for a, b in itertools.pairwise(stamps))
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "pipeline": "SD-1.5-sized (random weights)" if args.sd15 else "tiny",
        "dtype": str(dtype).removeprefix("torch."),
        "size_px": size,
        "inference_steps": args.steps,
        "batch": args.batch,
        "images_per_s": args.images / gen_s,
        "lora_steps_per_s": 1 / step_s,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{result['pipeline']} on {result['device']}, {result['dtype']}, {size} px, "
        f"{args.steps} steps, batch {args.batch}"
    )
    print(f"generation: {result['images_per_s']:.2f} images/s")
    print(f"LoRA training (rank 4, batch {args.batch}): {result['lora_steps_per_s']:.2f} steps/s")


if __name__ == "__main__":
    main()
