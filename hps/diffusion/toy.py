"""``toy``: a Stable Diffusion pipeline small enough to pretrain on two CPU cores in a few
minutes, that draws what its prompt says ("a small red circle on a white background").

It is a real ``StableDiffusionPipeline`` (AutoencoderKL, UNet2DConditionModel, CLIP text
encoder, the offline CLIP tokenizer, DDIM), so generation and LoRA training use it unchanged.
The recipe trains, from seeded initial weights, on the corpus :mod:`hps.diffusion.toy_corpus`
draws: first the VAE (reconstruction, a light KL), then the UNet (the usual noise-prediction
loss, captions dropped 10% of the time for classifier-free guidance) reading a frozen, seeded
CLIP text encoder. It is built once and kept in a cache folder named after the recipe's hash.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hps.diffusion import toy_corpus
from hps.diffusion.assembly import assemble_pipeline

CACHE_ENV = "HPS_TOY_CACHE"  # the folder holding toy-<recipe hash>/ (default ~/.cache/hps)
DEFAULT_CACHE_ROOT = Path("~/.cache/hps")


@dataclass(frozen=True)
class ToyRecipe:
    seed: int = 0
    corpus_size: int = 3000
    vae_steps: int = 200
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_kl_weight: float = 1e-6
    unet_steps: int = 600
    unet_batch: int = 16
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1


RECIPE = ToyRecipe()


def toy_components() -> dict[str, dict[str, Any]]:
    """The component configurations: 32x32 pixels, 8x8x4 latents."""
    return {
        "unet": {
            "sample_size": toy_corpus.IMAGE_SIZE // 4,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 64,
            "attention_head_dim": 8,
            "norm_num_groups": 16,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 3,
            "up_block_types": ("UpDecoderBlock2D",) * 3,
            "block_out_channels": (8, 16, 32),
            "latent_channels": 4,
            "norm_num_groups": 8,
            "sample_size": toy_corpus.IMAGE_SIZE,
        },
        "text": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
    }


def recipe_key(recipe: ToyRecipe = RECIPE) -> str:
    """A short hash of everything that decides the weights: the recipe, the component
    configurations and the source of this module and of the corpus."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(recipe), sort_keys=True).encode())
    digest.update(json.dumps(toy_components(), sort_keys=True).encode())
    for module in (__file__, toy_corpus.__file__):
        digest.update(Path(module).read_bytes())
    return digest.hexdigest()[:12]


def toy_cache_dir(recipe: ToyRecipe = RECIPE) -> Path:
    """Where the built pipeline lives: ``$HPS_TOY_CACHE/toy-<hash>`` (default root
    ``~/.cache/hps``); a new recipe gets a new folder."""
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_ROOT).expanduser()
    return root / f"toy-{recipe_key(recipe)}"


def _is_built(folder: Path) -> bool:
    return (folder / "model_index.json").is_file()


def ensure_toy_pipeline(
    folder: Path | None = None,
    *,
    recipe: ToyRecipe = RECIPE,
    progress: bool = True,
    threads: int | None = None,
) -> Path:
    """The folder of the built pipeline, building it first when missing. Written to a temporary
    folder and renamed into place; a lock makes a second process wait instead of building."""
    target = (folder or toy_cache_dir(recipe)).expanduser()
    if _is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(target.parent / f".{target.name}.lock"):
        if _is_built(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            pipe = build_toy_pipeline(recipe, progress=progress, threads=threads)
            pipe.save_pretrained(staging)
            (staging / "toy_recipe.json").write_text(
                json.dumps({"key": recipe_key(recipe), **asdict(recipe)}, indent=2)
            )
            if target.exists():  # a leftover without model_index.json: never a built one
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    with lock_path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_toy_pipeline(device: str | torch.device = "cpu") -> Any:
    """The toy pipeline on ``device`` (float32), built into the cache first if needed."""
    from diffusers import StableDiffusionPipeline

    folder = ensure_toy_pipeline()
    pipe: Any = StableDiffusionPipeline.from_pretrained(
        folder, local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def build_toy_pipeline(
    recipe: ToyRecipe = RECIPE, *, progress: bool = True, threads: int | None = None
) -> Any:
    """Pretrain the toy pipeline from scratch (deterministic for a given machine and number of
    ``threads``; default: one per two cores, since on a busy machine more threads than free
    cores make every step far slower)."""
    from tqdm.auto import tqdm

    with _training_mode(threads or max(1, (os.cpu_count() or 1) // 2)):
        pipe = assemble_pipeline(seed=recipe.seed, **toy_components())
        images, captions = toy_corpus.corpus(recipe.corpus_size, recipe.seed)
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        total = recipe.vae_steps + recipe.unet_steps
        with tqdm(total=total, desc="building the toy pipeline", disable=not progress) as bar:
            _train_vae(pipe.vae, pixels, recipe, bar.update)
            _train_denoiser(pipe, pixels, captions, recipe, bar.update)
    pipe.vae.eval()
    pipe.unet.eval()
    pipe.text_encoder.eval()
    return pipe


@contextmanager
def _training_mode(threads: int) -> Iterator[None]:
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _train_vae(
    vae: Any, pixels: torch.Tensor, recipe: ToyRecipe, advance: Callable[[int], object]
) -> None:
    generator = torch.Generator().manual_seed(recipe.seed + 1)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.vae_steps)
    vae.train()
    for _ in range(recipe.vae_steps):
        batch = pixels[torch.randint(0, len(pixels), (recipe.vae_batch,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.sample(generator=generator)
        reconstruction = vae.decode(latents).sample
        loss = torch.nn.functional.mse_loss(reconstruction, batch)
        loss = loss + recipe.vae_kl_weight * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        advance(1)
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():
        spread = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(256)])
    # As in Stable Diffusion: scaled latents have about unit variance.
    vae.register_to_config(scaling_factor=float(1.0 / spread.std()))


def _train_denoiser(
    pipe: Any,
    pixels: torch.Tensor,
    captions: list[str],
    recipe: ToyRecipe,
    advance: Callable[[int], object],
) -> None:
    # The text encoder keeps its seeded random weights (frozen, as in Stable Diffusion): each
    # caption still gets its own embedding, and the UNet learns to read it.
    from diffusers import DDPMScheduler

    generator = torch.Generator().manual_seed(recipe.seed + 2)
    vae, unet = pipe.vae, pipe.unet
    distinct = sorted(set(captions))
    with torch.no_grad():
        posteriors = [vae.encode(chunk).latent_dist for chunk in pixels.split(256)]
        contexts = pipe.text_encoder(_tokenize(pipe.tokenizer, [*distinct, ""]))[0]
    means = torch.cat([p.mean for p in posteriors])
    stds = torch.cat([p.std for p in posteriors])
    caption_index = torch.tensor([distinct.index(caption) for caption in captions])
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.text_encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.unet_lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.unet_steps)
    unet.train()
    for _ in range(recipe.unet_steps):
        index = torch.randint(0, len(pixels), (recipe.unet_batch,), generator=generator)
        noise_for_latents = torch.randn(means[index].shape, generator=generator)
        latents = (means[index] + stds[index] * noise_for_latents) * vae.config.scaling_factor
        dropped = torch.rand(len(index), generator=generator) < recipe.caption_dropout
        context = contexts[torch.where(dropped, len(distinct), caption_index[index])]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (len(index),), generator=generator
        )
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        loss = torch.nn.functional.mse_loss(unet(noisy, timesteps, context).sample, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        advance(1)
    unet.eval()


def _tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    encoded = tokenizer(
        captions,
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    )
    return torch.as_tensor(np.asarray(encoded.input_ids), dtype=torch.long)
