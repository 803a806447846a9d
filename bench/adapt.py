"""LoRA training steps/s of the product against a bare diffusers loop, and generation images/s,
on the small generator (CPU by default).

    .venv/bin/python -m bench.adapt                                 # toy pipeline, 1 thread
    .venv/bin/python -m bench.adapt --steps 40 --rounds 5 --batch-size 4 --threads 1 --json

- product: ``hps.diffusion.lora_training.train_lora`` as ``hps adapt`` runs it (PIL examples,
  the LoRA attached by the call, gradient clipping, ``on_step`` after every step);
- bare: the loop anyone would write with diffusers and peft (as diffusers'
  ``train_text_to_image_lora.py`` does): the examples' pixels prepared as tensors beforehand
  (a data loader's job), then per step VAE encoding, tokenising, text encoder, noise and
  timesteps from a DDPM scheduler, UNet forward, MSE, backward, clipping, AdamW step. Same
  rank, LoRA targets, batch size, resolution, examples, steps and learning rate.

Each round trains a fresh copy of the pipeline (a new LoRA); product and bare rounds alternate
(ABBA). Reported: median steps/s over rounds, steady (after ``--warmup`` steps) and whole
(the call from its start: LoRA attached, optimiser built, warm-up included), by the wall clock
and, steady, per second of this process's CPU time (with one thread, the work done, whatever
else the machine runs), and their ratios.
Generation: images/s of ``generate()`` at ``--inference-steps`` (10, as ``hps adapt`` is
checked) against a bare ``pipe(prompt, num_images_per_prompt=..., num_inference_steps=...)``,
the same batch and guidance scale.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.common import synthetic_png
from hps.diffusion.lora_training import Example, LoraConfig, train_lora
from hps.diffusion.pipelines import LORA_TARGETS, NEGATIVE_PROMPT, generate, open_pipeline

PROMPTS = [
    f"a {size} {colour} {shape} on a {background} background"
    for size in ("small", "large")
    for colour in ("red", "green", "blue")
    for shape in ("circle", "square", "triangle", "star")
    for background in ("white",)
]


def clocks() -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds): on a shared machine the CPU clock of a
    one-thread run counts the work done, whatever the neighbours do to the wall clock."""
    return time.perf_counter(), time.process_time()


@dataclass
class Round:
    """One training run: a (wall, CPU) timestamp after each step, from ``start``."""

    arm: str
    start: tuple[float, float] = field(default_factory=clocks)
    stamps: list[tuple[float, float]] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    def step_done(self, loss: float) -> None:
        self.stamps.append(clocks())
        self.losses.append(loss)

    def steady(self, warmup: int, clock: int = 0) -> float:
        """Steps/s after the first ``warmup`` steps (``clock`` 0: wall, 1: CPU)."""
        seconds = self.stamps[-1][clock] - self.stamps[warmup - 1][clock]
        return (len(self.stamps) - warmup) / seconds

    def whole(self, clock: int = 0) -> float:
        """Steps/s of the whole call, set-up and warm-up included."""
        return len(self.stamps) / (self.stamps[-1][clock] - self.start[clock])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LoRA training and generation throughput")
    parser.add_argument("--pipeline", default="toy", help="toy (default), tiny or a folder")
    parser.add_argument("--steps", type=int, default=40, help="LoRA steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="steps left out of 'steady'")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each arm")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--examples", type=int, default=48, help="training examples")
    parser.add_argument("--images", type=int, default=16, help="images per generation round")
    parser.add_argument("--gen-batch", type=int, default=4, help="images per pipeline call")
    parser.add_argument("--inference-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup or args.warmup < 1:
        parser.error("need 1 <= --warmup < --steps")
    for name in ("rounds", "batch_size", "rank", "examples", "images", "gen_batch", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def resolution(pipe: Any) -> int:
    return int(pipe.unet.config.sample_size * pipe.vae_scale_factor)


def make_examples(count: int, size: int) -> list[Example]:
    """Synthetic pictures at the pipeline's resolution; positives captioned with a prompt,
    negatives (every other one) with the negative prompt in front, as ``hps adapt`` does."""
    from PIL import Image

    examples = []
    for i in range(count):
        image = Image.open(io.BytesIO(synthetic_png(i, size))).convert("RGB")
        prompt = PROMPTS[(i // 2) % len(PROMPTS)]
        examples.append(Example(image, prompt if i % 2 == 0 else NEGATIVE_PROMPT + prompt))
    return examples


def lora_config(args: argparse.Namespace) -> LoraConfig:
    return LoraConfig(rank=args.rank, lr=args.lr, steps=args.steps, batch_size=args.batch_size)


def product_round(base: Any, examples: list[Example], config: LoraConfig) -> Round:
    """``train_lora`` on a fresh copy of ``base``, a timestamp per step (``on_step``)."""
    pipe = copy.deepcopy(base)
    measured = Round("product")

    def on_step(_step: int, _total: int, loss: float) -> bool:
        measured.step_done(loss)
        return True

    train_lora(pipe, examples, config, on_step=on_step)
    return measured


def example_tensors(examples: list[Example], size: int, device: torch.device) -> torch.Tensor:
    """The examples' pixels in [-1, 1], NCHW, on ``device``: what a data loader would yield."""
    import numpy as np
    from PIL import Image

    arrays = [
        np.asarray(e.image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
        for e in examples
    ]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return pixels.to(device)


def bare_round(base: Any, pixels: torch.Tensor, captions: list[str], config: LoraConfig) -> Round:
    """The bare diffusers + peft loop on a fresh copy of ``base``."""
    pipe = copy.deepcopy(base)
    measured = Round("bare")
    bare_training(pipe, pixels, captions, config, measured)
    return measured


def bare_training(
    pipe: Any, pixels: torch.Tensor, captions: list[str], config: LoraConfig, out: Round
) -> None:
    from diffusers import DDPMScheduler
    from peft import LoraConfig as PeftLoraConfig

    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    torch.manual_seed(config.seed)
    unet.add_adapter(
        PeftLoraConfig(
            r=config.rank,
            lora_alpha=config.rank,
            init_lora_weights="gaussian",
            target_modules=LORA_TARGETS,
        )
    )
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    parameters = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.train()
    for _ in range(config.steps):
        index = torch.randint(len(captions), (config.batch_size,))
        with torch.no_grad():
            latents = vae.encode(pixels[index]).latent_dist.sample() * vae.config.scaling_factor
            tokens = tokenizer(
                [captions[i] for i in index.tolist()],
                padding="max_length",
                truncation=True,
                max_length=tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids.to(pixels.device)
            context = text_encoder(tokens)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
        )
        prediction = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, context)
        loss = torch.nn.functional.mse_loss(prediction.sample.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        out.step_done(float(loss.item()))


def alternate(
    rounds: int, product: Callable[[], Round], bare: Callable[[], Round]
) -> tuple[list[Round], list[Round]]:
    """``rounds`` of each, in ABBA order so that a drifting machine favours neither."""
    products: list[Round] = []
    bares: list[Round] = []
    for r in range(rounds):
        order = (product, bare) if r % 2 == 0 else (bare, product)
        for run in order:
            measured = run()
            (products if measured.arm == "product" else bares).append(measured)
    return products, bares


def training_summary(products: list[Round], bares: list[Round], warmup: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, runs in (("product", products), ("bare", bares)):
        result[f"{name}_steps_per_s"] = statistics.median(r.steady(warmup) for r in runs)
        result[f"{name}_whole_steps_per_s"] = statistics.median(r.whole() for r in runs)
        result[f"{name}_cpu_steps_per_s"] = statistics.median(r.steady(warmup, 1) for r in runs)
        result[f"{name}_rounds_steps_per_s"] = [round(r.steady(warmup), 3) for r in runs]
        result[f"{name}_steps"] = [len(r.stamps) for r in runs]
        result[f"{name}_final_loss"] = [r.losses[-1] for r in runs]
    result["ratio"] = result["product_steps_per_s"] / result["bare_steps_per_s"]
    result["ratio_whole"] = result["product_whole_steps_per_s"] / result["bare_whole_steps_per_s"]
    result["ratio_cpu"] = result["product_cpu_steps_per_s"] / result["bare_cpu_steps_per_s"]
    return result


def measure_training(base: Any, args: argparse.Namespace) -> dict[str, Any]:
    size = resolution(base)
    examples = make_examples(args.examples, size)
    config = lora_config(args)
    pixels = example_tensors(examples, size, base.device)
    captions = [e.caption for e in examples]
    products, bares = alternate(
        args.rounds,
        lambda: product_round(base, examples, config),
        lambda: bare_round(base, pixels, captions, config),
    )
    settings = {
        "resolution": size,
        "examples": args.examples,
        "batch_size": args.batch_size,
        "rank": args.rank,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
    }
    return {**settings, **training_summary(products, bares, args.warmup)}


@dataclass
class GenerationRun:
    arm: str
    seconds: float
    cpu_seconds: float
    images: list[Any]

    @classmethod
    def since(cls, arm: str, start: tuple[float, float], images: list[Any]) -> GenerationRun:
        wall, cpu = clocks()
        return cls(arm, wall - start[0], cpu - start[1], images)


def product_generation(pipe: Any, args: argparse.Namespace, prompt: str) -> GenerationRun:
    start = clocks()
    seeds = list(range(args.images))
    out = generate(pipe, prompt, seeds, steps=args.inference_steps, batch_size=args.gen_batch)
    return GenerationRun.since("product", start, [g.image for g in out])


def bare_generation(pipe: Any, args: argparse.Namespace, prompt: str) -> GenerationRun:
    start = clocks()
    images: list[Any] = []
    for first in range(0, args.images, args.gen_batch):
        count = min(args.gen_batch, args.images - first)
        output = pipe(
            prompt,
            num_images_per_prompt=count,
            num_inference_steps=args.inference_steps,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(first),
        )
        images += output.images
    return GenerationRun.since("bare", start, images)


def measure_generation(base: Any, args: argparse.Namespace) -> dict[str, Any]:
    prompt = PROMPTS[0]
    generate(base, prompt, [0], steps=2, batch_size=1)  # warm-up
    runs: dict[str, list[GenerationRun]] = {"product": [], "bare": []}
    arms = (product_generation, bare_generation)
    for r in range(args.rounds):
        for run in arms if r % 2 == 0 else arms[::-1]:
            generated = run(base, args, prompt)
            runs[generated.arm].append(generated)
    result: dict[str, Any] = {
        "inference_steps": args.inference_steps,
        "images": args.images,
        "batch": args.gen_batch,
        "image_size": list(runs["product"][0].images[0].size),
    }
    for arm, measured in runs.items():
        result[f"{arm}_images_per_s"] = statistics.median(args.images / m.seconds for m in measured)
        result[f"{arm}_cpu_images_per_s"] = statistics.median(
            args.images / m.cpu_seconds for m in measured
        )
        result[f"{arm}_rounds_images_per_s"] = [round(args.images / m.seconds, 3) for m in measured]
        result[f"{arm}_image_counts"] = [len(m.images) for m in measured]
    result["ratio"] = result["product_images_per_s"] / result["bare_images_per_s"]
    result["ratio_cpu"] = result["product_cpu_images_per_s"] / result["bare_cpu_images_per_s"]
    return result


def print_table(result: dict[str, Any]) -> None:
    train, gen = result["training"], result["generation"]
    print(
        f"device {result['device']}  pipeline {result['pipeline']}  threads {result['threads']}  "
        f"{train['resolution']} px, batch {train['batch_size']}, rank {train['rank']}, "
        f"{train['examples']} examples, {train['steps']} steps x {train['rounds']} rounds"
    )
    print(f"{'LoRA training, steps/s':44} {'steady':>9} {'whole call':>11} {'per CPU s':>10}")
    for arm, label in (("bare", "bare diffusers+peft loop"), ("product", "product train_lora")):
        print(
            f"{label:44} {train[f'{arm}_steps_per_s']:>9.2f} "
            f"{train[f'{arm}_whole_steps_per_s']:>11.2f} {train[f'{arm}_cpu_steps_per_s']:>10.2f}"
        )
    print(
        f"{'product / bare':44} {train['ratio']:>9.2f} {train['ratio_whole']:>11.2f} "
        f"{train['ratio_cpu']:>10.2f}"
    )
    title = f"generation, {gen['inference_steps']} steps, batch {gen['batch']}, images/s"
    print(f"{title:44} {'wall':>9} {'':>11} {'per CPU s':>10}")
    for arm, label in (
        ("bare", "bare pipe(prompt, num_images_per_prompt=...)"),
        ("product", "product generate()"),
    ):
        print(
            f"{label:44} {gen[f'{arm}_images_per_s']:>9.2f} {'':>11} "
            f"{gen[f'{arm}_cpu_images_per_s']:>10.2f}"
        )
    print(f"{'product / bare':44} {gen['ratio']:>9.2f} {'':>11} {gen['ratio_cpu']:>10.2f}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        base = open_pipeline(args.pipeline, "cpu")
        result = {
            "device": "cpu",
            "pipeline": args.pipeline,
            "threads": args.threads,
            "torch": torch.__version__,
            "training": measure_training(base, args),
            "generation": measure_generation(base, args),
        }
    finally:
        torch.set_num_threads(previous_threads)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_table(result)
    return result


if __name__ == "__main__":
    main()
