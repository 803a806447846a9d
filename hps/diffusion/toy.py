"""``toy``: a Stable Diffusion pipeline small enough to pretrain on two CPU cores in a few
minutes, that draws what its prompt says ("a small red circle on a white background").

It is a real ``StableDiffusionPipeline`` (AutoencoderKL, UNet2DConditionModel, CLIP text
encoder, the offline CLIP tokenizer, DDIM), so generation and LoRA training use it unchanged.
The VAE is set, not trained: its latents are 4x4 block means of the picture. The UNet is
pretrained from seeded initial weights on the corpus :mod:`hps.diffusion.toy_corpus` draws
(the usual noise-prediction loss, captions dropped 10% of the time for classifier-free
guidance), reading a frozen, seeded CLIP text encoder. It is built once and kept in a cache
folder named after the recipe's hash.
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
from typing import Any, cast

import numpy as np
import torch

from hps.diffusion import toy_corpus
from hps.diffusion.assembly import assemble_pipeline
from hps.diffusion.selection import NEGATIVE_CAPTION_PREFIX as NEGATIVE_PHRASE

CACHE_ENV = "HPS_TOY_CACHE"  # the folder holding toy-<recipe hash>/ (default ~/.cache/hps)
DEFAULT_CACHE_ROOT = Path("~/.cache/hps")


@dataclass(frozen=True)
class ToyRecipe:
    seed: int = 0
    corpus_size: int = 3000
    unet_steps: int = 2400
    unet_batch: int = 32
    unet_lr: float = 2e-3
    caption_dropout: float = 0.1  # share of samples captioned "" (classifier-free guidance)
    # Share captioned with the paper's negative prompt: alone, or before the caption. The
    # phrase stays neutral (same pictures), as it is to Stable Diffusion before adaptation,
    # so the negative prompt does not move the toy's images by chance; adaptation gives it
    # its meaning.
    negative_phrase_alone: float = 0.05
    negative_phrase_prefix: float = 0.1


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
            "block_out_channels": (8, 8, 8),
            "latent_channels": 4,
            "norm_num_groups": 1,
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
        total = recipe.unet_steps
        with tqdm(total=total, desc="building the toy pipeline", disable=not progress) as bar:
            _prepare_vae(pipe.vae, pixels)
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


# The VAE is set, not trained: its latents are the picture's RGB averaged over 4x4 pixel
# blocks (a fourth channel stays zero) and it decodes them by nearest upsampling. Residual
# blocks and attention become identities (their last layer zeroed); each GroupNorm that cannot
# be skipped sees channels (+rgb, -rgb, +K, -K): zero mean, a variance that is nearly K²/4,
# and silu(x) - silu(-x) = x undoes the activation exactly.
_VAE_CONSTANT = 100.0
_VAE_SPREAD = _VAE_CONSTANT / 2  # the GroupNorm's std, up to (rgb / K)² ~ 1e-4


def set_vae_to_block_averages(vae: Any) -> None:
    """Weights making ``vae`` encode to 4x4 block means of the RGB (latent channels 0-2) and
    decode by nearest upsampling (block_out_channels (8,) * n, one norm group)."""
    with torch.no_grad():
        for parameter in vae.parameters():
            parameter.zero_()
        _set_inner_layers(vae)
        _set_outer_layers(vae)


def _set_inner_layers(vae: Any) -> None:
    from diffusers.models.attention_processor import Attention
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.resnet import ResnetBlock2D
    from diffusers.models.upsampling import Upsample2D

    with torch.no_grad():
        for module in vae.modules():
            if isinstance(module, ResnetBlock2D):
                module.conv2.weight.zero_()  # with the rest zero: the block is its shortcut
            elif isinstance(module, torch.nn.GroupNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, Downsample2D):
                assert module.conv is not None
                _diagonal(module.conv.weight, [(0, 0), (0, 1), (1, 0), (1, 1)], 0.25)
            elif isinstance(module, Upsample2D):
                assert module.conv is not None
                _diagonal(module.conv.weight, [(1, 1)], 1.0)
            elif isinstance(module, Attention):
                cast(Any, module).to_out[0].weight.zero_()


def _set_outer_layers(vae: Any) -> None:
    with torch.no_grad():
        for conv_in in (vae.encoder.conv_in, vae.decoder.conv_in):
            for channel in range(3):
                conv_in.weight[channel, channel, 1, 1] = 1.0
                conv_in.weight[channel + 3, channel, 1, 1] = -1.0
            conv_in.bias[6], conv_in.bias[7] = _VAE_CONSTANT, -_VAE_CONSTANT
        for conv_out in (vae.encoder.conv_out, vae.decoder.conv_out):
            for channel in range(3):
                conv_out.weight[channel, channel, 1, 1] = _VAE_SPREAD
                conv_out.weight[channel, channel + 3, 1, 1] = -_VAE_SPREAD
        latent = vae.config.latent_channels
        for channel in range(latent):
            vae.quant_conv.weight[channel, channel] = 1.0
            vae.post_quant_conv.weight[channel, channel] = 1.0
        vae.quant_conv.bias[latent:] = -30.0  # log-variance at diffusers' floor: sample = mean


def _diagonal(weight: torch.Tensor, taps: list[tuple[int, int]], value: float) -> None:
    for channel in range(weight.shape[0]):
        for row, column in taps:
            weight[channel, channel, row, column] = value


def _prepare_vae(vae: Any, pixels: torch.Tensor) -> None:
    set_vae_to_block_averages(vae)
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():
        spread = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in pixels.split(256)])
    # As in Stable Diffusion: scaled latents have about unit variance.
    vae.register_to_config(scaling_factor=float(1.0 / spread[:, :3].std()))


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
    prefixed = [NEGATIVE_PHRASE + caption for caption in distinct]
    with torch.no_grad():
        posteriors = [vae.encode(chunk).latent_dist for chunk in pixels.split(256)]
        texts = [*distinct, *prefixed, "", NEGATIVE_PHRASE]
        contexts = torch.cat(
            [pipe.text_encoder(_tokenize(pipe.tokenizer, chunk))[0] for chunk in _chunks(texts)]
        )
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
        context = contexts[_context_rows(caption_index[index], len(distinct), recipe, generator)]
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


def _chunks(texts: list[str], size: int = 128) -> Iterator[list[str]]:
    for start in range(0, len(texts), size):
        yield texts[start : start + size]


def _context_rows(
    captions: torch.Tensor, distinct: int, recipe: ToyRecipe, generator: torch.Generator
) -> torch.Tensor:
    """Rows of the context table (captions, the same prefixed with the negative phrase, "",
    the phrase alone) for a batch whose captions are ``captions``."""
    draw = torch.rand(len(captions), generator=generator)
    alone = recipe.caption_dropout + recipe.negative_phrase_alone
    prefix = alone + recipe.negative_phrase_prefix
    rows = torch.where(draw < prefix, captions + distinct, captions)
    rows = torch.where(draw < alone, torch.full_like(captions, 2 * distinct + 1), rows)
    return torch.where(draw < recipe.caption_dropout, torch.full_like(captions, 2 * distinct), rows)


def _tokenize(tokenizer: Any, captions: list[str]) -> torch.Tensor:
    encoded = tokenizer(
        captions,
        padding="max_length",
        truncation=True,
        max_length=tokenizer.model_max_length,
        return_tensors="pt",
    )
    return torch.as_tensor(np.asarray(encoded.input_ids), dtype=torch.long)
