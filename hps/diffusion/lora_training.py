"""LoRA fine-tuning of the UNet on (image, caption) examples: the usual denoising loss, AdamW,
constant learning rate, gradient clipping (the paper's settings by default)."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
    # Share of the draws of a negative example captioned with the negative prompt alone (its
    # ``caption_alone``) instead of the negative prompt + its prompt: inference asks the model
    # for the negative prompt alone, and a small model does not carry the meaning over from
    # the prefixed captions by itself. 0 keeps the paper's captions only.
    negative_alone: float = 0.5


@dataclass(frozen=True)
class Example:
    """A training picture and its caption; a negative also has ``caption_alone``, the
    negative prompt without the prompt."""

    image: Image.Image
    caption: str
    caption_alone: str | None = None


def _pixels(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    arrays = [
        np.asarray(
            image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32
        )
        for image in images
    ]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / 127.5 - 1.0


class EncodedExamples:
    """The examples as the frozen encoders see them, each computed once: an example's latent
    distribution (VAE mean and std) and a caption's text embedding. Encoded on first use,
    the misses of a batch together, and kept on the pipeline's device; a step then draws only
    its latent sample, exactly as ``vae.encode(pixels).latent_dist.sample()`` would."""

    def __init__(self, pipe: Any, examples: Sequence[Example]) -> None:
        self.pipe = pipe
        self.examples = examples
        self.size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.latent_mean: dict[int, torch.Tensor] = {}
        self.latent_std: dict[int, torch.Tensor] = {}
        self.context: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _encode_images(self, indices: Sequence[int]) -> None:
        missing = sorted({i for i in indices if i not in self.latent_mean})
        if not missing:
            return
        vae = self.pipe.vae
        pixels = _pixels([self.examples[i].image for i in missing], self.size)
        latent = vae.encode(pixels.to(vae.device, dtype=vae.dtype)).latent_dist
        for row, i in enumerate(missing):
            self.latent_mean[i], self.latent_std[i] = latent.mean[row], latent.std[row]

    @torch.no_grad()
    def _encode_captions(self, captions: Sequence[str]) -> None:
        missing = sorted({c for c in captions if c not in self.context})
        if not missing:
            return
        tokenizer, text_encoder = self.pipe.tokenizer, self.pipe.text_encoder
        tokens = tokenizer(
            missing,
            padding="max_length",
            truncation=True,
            max_length=tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(text_encoder.device)
        for caption, embedding in zip(missing, text_encoder(tokens)[0], strict=True):
            self.context[caption] = embedding

    def batch(
        self, indices: Sequence[int], captions: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latents sampled for the examples at ``indices``, and the text embeddings of
        ``captions`` (default: the examples' own)."""
        if captions is None:
            captions = [self.examples[i].caption for i in indices]
        self._encode_images(indices)
        self._encode_captions(captions)
        mean = torch.stack([self.latent_mean[i] for i in indices])
        std = torch.stack([self.latent_std[i] for i in indices])
        latents = mean + std * torch.randn_like(mean)
        context = torch.stack([self.context[c] for c in captions])
        return latents * self.pipe.vae.config.scaling_factor, context


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
    p: Any = pipe
    unet = p.unet
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    add_lora(pipe, rank=config.rank)
    noise_scheduler = DDPMScheduler.from_config(p.scheduler.config)
    parameters = [q for q in unet.parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    p.vae.requires_grad_(False)
    p.text_encoder.requires_grad_(False)
    encoded = EncodedExamples(p, examples)
    unet.train()
    losses: list[float] = []
    for step in range(1, config.steps + 1):
        indices = [rng.randrange(len(examples)) for _ in range(config.batch_size)]
        captions = [draw_caption(examples[i], config.negative_alone, rng) for i in indices]
        latents, context = encoded.batch(indices, captions)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0,
            noise_scheduler.config.num_train_timesteps,
            (latents.shape[0],),
            device=latents.device,
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


def draw_caption(example: Example, alone_share: float, rng: random.Random) -> str:
    """The caption of one draw of ``example``: its ``caption_alone`` ``alone_share`` of the
    time when it has one."""
    if example.caption_alone is not None and rng.random() < alone_share:
        return example.caption_alone
    return example.caption
