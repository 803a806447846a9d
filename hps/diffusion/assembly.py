"""A Stable Diffusion pipeline put together in code from component configurations: the real
diffusers classes, a DDIM scheduler and the offline CLIP tokenizer (nothing is downloaded)."""

from __future__ import annotations

from typing import Any

import torch


def assemble_pipeline(
    *, unet: dict[str, Any], vae: dict[str, Any], text: dict[str, Any], seed: int = 0
) -> Any:
    """A randomly initialised StableDiffusionPipeline from component configurations (seeded),
    with a DDIM scheduler and the offline CLIP tokenizer."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from hps.diffusion.tokenizer import offline_clip_tokenizer

    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        **text,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe: Any = StableDiffusionPipeline(
        vae=AutoencoderKL(**vae),
        text_encoder=CLIPTextModel(text_config),
        tokenizer=offline_clip_tokenizer(),
        unet=UNet2DConditionModel(**unet),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
