"""LoRA fine-tuning of the UNet on (image, caption) examples: the usual denoising loss, AdamW,
constant learning rate, gradient clipping (the paper's settings by default)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from hps.diffusion.pipelines import add_lora


@dataclass
class LoraConfig:
    rank: int = 4
    lr: float = 1e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    steps: int = 1000
    batch_size: int = 4
    seed: int = 0


@dataclass(frozen=True)
class Example:
    image: Image.Image
    caption: str


def _pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    arrays = [
        np.asarray(
            image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32
        )
        for image in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / 127.5 - 1.0


def train_lora(
    pipe: object,
    examples: Sequence[Example],
    config: LoraConfig,
    *,
    on_step: Callable[[int, int, float], bool] | None = None,
) -> list[float]:
    """Attach a LoRA to ``pipe.unet`` and train it on ``examples``; return the losses.
    ``on_step(step, total, loss)`` returning False stops early."""
    from diffusers import DDPMScheduler

    if not examples:
        raise ValueError("no training examples (no prompt had a clear positive or negative)")
    p: object = pipe
    unet, vae, text_encoder, tokenizer = p.unet, p.vae, p.text_encoder, p.tokenizer  # type: ignore[attr-defined]
    device = unet.device
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    add_lora(pipe, rank=config.rank)
    noise_scheduler = DDPMScheduler.from_config(p.scheduler.config)  # type: ignore[attr-defined]
    size = unet.config.sample_size * p.vae_scale_factor  # type: ignore[attr-defined]
    parameters = [q for q in unet.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.train()
    losses: list[float] = []
    for step in range(1, config.steps + 1):
        batch = [examples[rng.randrange(len(examples))] for _ in range(config.batch_size)]
        pixels = _pixels([e.image for e in batch], size).to(device, dtype=vae.dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            tokens = tokenizer(
                [e.caption for e in batch],
                padding="max_length",
                truncation=True,
                max_length=tokenizer.model_max_length,
                return_tensors="pt",
            ).input_ids.to(device)
            context = text_encoder(tokens)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=device
        )
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, context).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if on_step is not None and not on_step(step, config.steps, losses[-1]):
            break
    unet.eval()
    return losses
