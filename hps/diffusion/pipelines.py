"""Stable Diffusion pipelines: loading (local only), a tiny pipeline built in code, seeded
generation, and LoRA versions loaded, switched and unloaded by name.

Nothing here downloads: a diffusers folder or a single-file checkpoint on disk is loaded with
``local_files_only``; a hub id must be fetched explicitly beforehand. A catalogue name
(``sd-1.5``, ``sdxl``: :mod:`hps.catalogue`) resolves to the folder ``hps models fetch NAME``
recorded under the models directory (``models_dir``, else ``$MODELS_DIR``), its weight files
verified against the sha256 recorded then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from hps.diffusion.assembly import assemble_pipeline

if TYPE_CHECKING:
    from hps.fetch import FetchRecord

NEGATIVE_PROMPT = "Weird image. "  # the paper's: negatives were captioned with it in training


class PipelineError(ValueError):
    """A pipeline cannot be loaded or used; the message says why."""


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int


def build_tiny_pipeline(seed: int = 0, image_size: int = 64) -> Any:
    """A complete, randomly initialised pipeline small enough for CPU tests: real classes and
    the real tokenizer, a few thousand parameters per part."""
    return assemble_pipeline(
        seed=seed,
        unet={
            "sample_size": image_size // 2,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 16,
        },
        vae={
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
            "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
            "block_out_channels": (32, 64),
            "latent_channels": 4,
            "norm_num_groups": 16,
        },
        text={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
        },
    )


def build_sd15_sized_pipeline(seed: int = 0) -> Any:
    """Stable Diffusion 1.5's architecture (860M UNet, VAE, CLIP ViT-L/14 text encoder) with
    random weights: for timing on a GPU without downloading anything."""
    return assemble_pipeline(
        seed=seed,
        unet={"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8},
        vae={
            "block_out_channels": (128, 256, 512, 512),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "layers_per_block": 2,
            "latent_channels": 4,
            "sample_size": 512,
        },
        text={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_attention_heads": 12,
            "num_hidden_layers": 12,
        },
    )


def load_pipeline(
    source: str | Path,
    *,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
    variant: str | None = None,
    pipeline_class: str | None = None,
) -> Any:
    """A pipeline from a local diffusers folder or a single-file checkpoint (never the hub);
    ``variant`` picks a folder's weight files (``fp16``: ``*.fp16.safetensors``) and
    ``pipeline_class`` the diffusers class (default ``StableDiffusionPipeline``)."""
    import diffusers
    from diffusers import StableDiffusionPipeline

    path = Path(source)
    kwargs: dict[str, Any] = {"safety_checker": None, "requires_safety_checker": False}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        if path.is_dir():
            cls = getattr(diffusers, pipeline_class or "StableDiffusionPipeline")
            if cls is not StableDiffusionPipeline:
                kwargs = {k: v for k, v in kwargs.items() if k == "torch_dtype"}
            if variant is not None:  # a catalogue folder: its safetensors only, never a pickle
                kwargs.update(variant=variant, use_safetensors=True)
            pipe: Any = cls.from_pretrained(path, local_files_only=True, **kwargs)
        elif path.is_file():
            pipe = StableDiffusionPipeline.from_single_file(
                str(path), local_files_only=True, **kwargs
            )
        else:
            raise PipelineError(
                f"{source}: no such diffusers folder or checkpoint (hub ids are not downloaded "
                "implicitly; fetch the model first)"
            )
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"{source}: cannot load a Stable Diffusion pipeline ({exc})") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def catalogue_pipeline(name: str, models_dir: Path | None = None) -> FetchRecord | None:
    """The fetch record of catalogue pipeline ``name`` (None when ``name`` names none), its
    weight files verified against their recorded sha256 (:func:`hps.fetch.verified_record`:
    FetchRecordError when it is not fetched yet, its record is malformed, or a file is missing
    or changed); PipelineError when there is no models directory to look in."""
    from hps.catalogue import load_catalogue
    from hps.fetch import verified_record

    entry = load_catalogue().get(name)
    if entry is None or entry.kind != "pipeline":
        return None
    root = models_dir or (Path(os.environ["MODELS_DIR"]) if os.environ.get("MODELS_DIR") else None)
    if root is None:
        raise PipelineError(f"{name}: a catalogue pipeline, but no models directory (MODELS_DIR)")
    return verified_record(root, name)


TINY_PIPELINE = "tiny"  # the source name of the pipeline built in code
TOY_PIPELINE = "toy"  # the small pretrained one (hps.diffusion.toy), built once and cached


def open_pipeline(
    source: str | Path,
    device: str | torch.device = "auto",
    *,
    seed: int = 0,
    models_dir: Path | None = None,
) -> Any:
    """The pipeline ``source`` names, on ``device``: ``tiny`` is built in code (random weights,
    ``seed``; for tests and development), ``toy`` is the small pretrained generator of
    :mod:`hps.diffusion.toy` (float32; built into its cache folder on first use, a few
    minutes), a catalogue name (``sd-1.5``) is the folder ``hps models fetch`` recorded under
    ``models_dir`` (:func:`catalogue_pipeline`), anything else is a local diffusers folder or
    checkpoint (:func:`load_pipeline`), in float16 on CUDA and float32 elsewhere."""
    from hps.device import resolve_device

    target = device if isinstance(device, torch.device) else resolve_device(device)
    if str(source) == TINY_PIPELINE:
        return build_tiny_pipeline(seed=seed).to(target)
    if str(source) == TOY_PIPELINE:
        from hps.diffusion.toy import open_toy_pipeline

        return open_toy_pipeline(target)
    dtype = torch.float16 if target.type == "cuda" else None
    record = catalogue_pipeline(str(source), models_dir)
    if record is not None:
        return load_pipeline(
            record.folder,
            device=str(target),
            dtype=dtype,
            variant=record.variant,
            pipeline_class=record.pipeline_class,
        )
    return load_pipeline(source, device=str(target), dtype=dtype)


def generate(
    pipe: Any,
    prompt: str,
    seeds: list[int],
    *,
    steps: int = 25,
    guidance_scale: float = 7.5,
    negative_prompt: str | None = None,
    size: int | None = None,
    batch_size: int = 4,
    on_progress: Callable[[float], None] | None = None,
) -> list[GeneratedImage]:
    """One image per seed (same seed, same image), in batches. ``on_progress`` is called
    with the fraction done after every denoising step (it may raise to stop)."""
    device = pipe.device
    images: list[GeneratedImage] = []
    batches = max(1, -(-len(seeds) // batch_size))
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start : start + batch_size]
        step_callback = None
        if on_progress is not None:
            done = start // batch_size

            def step_callback(
                _pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any], done: int = done
            ) -> dict[str, Any]:
                assert on_progress is not None
                on_progress((done + (step + 1) / steps) / batches)
                return kwargs

        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in chunk]
        latents = _initial_latents(pipe, generators, size, device)
        output = pipe(
            [prompt] * len(chunk),
            negative_prompt=[negative_prompt] * len(chunk) if negative_prompt else None,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            latents=latents,
            height=size,
            width=size,
            output_type="pil",
            callback_on_step_end=step_callback,
        )
        images += [
            GeneratedImage(image, seed) for image, seed in zip(output.images, chunk, strict=True)
        ]
    return images


def _initial_latents(
    pipe: Any, generators: list[torch.Generator], size: int | None, device: torch.device
) -> torch.Tensor:
    # Drawn per seed on the CPU, so an image depends only on its own seed (not on the batch
    # it was generated in, nor on the device).
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    shape = (
        pipe.unet.config.in_channels,
        size // pipe.vae_scale_factor,
        size // pipe.vae_scale_factor,
    )
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    return noise.to(device=device, dtype=pipe.unet.dtype) * pipe.scheduler.init_noise_sigma


LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def add_lora(pipe: Any, rank: int = 4, alpha: int | None = None) -> None:
    """Attach a trainable LoRA adapter to the UNet's attention projections."""
    from peft import LoraConfig

    pipe.unet.add_adapter(
        LoraConfig(
            r=rank,
            lora_alpha=alpha or rank,
            init_lora_weights="gaussian",
            target_modules=LORA_TARGETS,
        )
    )


def save_lora(pipe: Any, folder: Path) -> Path:
    """Write the UNet's LoRA in the diffusers format (``pytorch_lora_weights.safetensors``)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=state, safe_serialization=True
    )
    return folder / "pytorch_lora_weights.safetensors"


def use_lora(pipe: Any, folder: Path, name: str) -> None:
    """Load (once) and activate the LoRA saved in ``folder`` under adapter ``name``."""
    loaded = (
        set(pipe.get_list_adapters().get("unet", []))
        if hasattr(pipe, "get_list_adapters")
        else set()
    )
    if name not in loaded:
        weights = folder / "pytorch_lora_weights.safetensors"
        if not weights.is_file():
            raise PipelineError(f"{folder}: no pytorch_lora_weights.safetensors")
        # Name the safetensors file: diffusers must never fall back to a pickled .bin.
        pipe.load_lora_weights(
            str(folder), weight_name="pytorch_lora_weights.safetensors", adapter_name=name
        )
    pipe.set_adapters([name])


def unload_loras(pipe: Any) -> None:
    """Remove every LoRA: the pipeline is the base model again."""
    pipe.unload_lora_weights()
