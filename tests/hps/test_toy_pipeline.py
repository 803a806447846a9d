"""The ``toy`` generator: its corpus, its cache, and that its samples follow their prompts on
colour+shape pairs it never saw together (colour agreement; shape is learnt only a little).

The pipeline is built once into ``$HPS_TOY_CACHE`` (default ``~/.cache/hps``) and reused by
every later run; the first run of the slow tests spends a few minutes building it.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hps.diffusion import toy, toy_corpus
from hps.diffusion.lora_training import Example, LoraConfig, train_lora
from hps.diffusion.pipelines import (
    NEGATIVE_PROMPT,
    build_tiny_pipeline,
    generate,
    open_pipeline,
    save_lora,
    unload_loras,
    use_lora,
)
from hps.diffusion.toy_corpus import HELD_OUT_PAIRS, Scene, dominant_colour, dominant_shape

# Measured on the built pipeline (10 DDIM steps, guidance 7.5, seeds 1000+, the 72 held-out
# scenes): colour agreement 0.85 overall (0.83 with the negative prompt), 0.94 for large
# figures; 0.96 at guidance 4. Shape agreement is 0.42-0.47 (chance 0.33): on 8x8 latents a
# small figure is a few cells, so shape is not asserted. The bounds leave a margin below.
MIN_COLOUR_AGREEMENT = 0.75
MIN_COLOUR_AGREEMENT_LARGE = 0.85


def test_the_corpus_is_deterministic_and_leaves_out_the_held_out_pairs() -> None:
    images, captions = toy_corpus.corpus(64, seed=5)
    again, same_captions = toy_corpus.corpus(64, seed=5)
    assert np.array_equal(images, again) and captions == same_captions
    assert images.shape == (64, 32, 32, 3) and images.dtype == np.uint8
    training = toy_corpus.scenes(held_out=False)
    held_out = toy_corpus.scenes(held_out=True)
    assert {(s.colour, s.shape) for s in held_out} == HELD_OUT_PAIRS
    assert not {(s.colour, s.shape) for s in training} & HELD_OUT_PAIRS
    # every colour and every shape is still seen in training
    assert {s.colour for s in training} == set(toy_corpus.COLOURS)
    assert {s.shape for s in training} == set(toy_corpus.SHAPES)
    assert "a small red striped circle on a white background" in {s.caption for s in training}


def test_the_measurements_read_the_corpus_pictures() -> None:
    rng = random.Random(3)
    rendered = [
        (scene, toy_corpus.render(scene, rng)) for scene in toy_corpus.scenes(held_out=True)
    ]
    colours = np.mean([dominant_colour(image) == scene.colour for scene, image in rendered])
    shapes = np.mean([dominant_shape(image) == scene.shape for scene, image in rendered])
    assert colours == 1.0
    assert shapes >= 0.95
    blank = np.full((32, 32, 3), 245, dtype=np.uint8)
    assert dominant_colour(blank) is None and dominant_shape(blank) is None


def test_the_cache_folder_follows_the_recipe_and_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(toy.CACHE_ENV, str(tmp_path))
    assert toy.toy_cache_dir() == tmp_path / f"toy-{toy.recipe_key()}"
    assert toy.recipe_key() == toy.recipe_key(replace(toy.RECIPE))
    assert toy.recipe_key(replace(toy.RECIPE, unet_steps=toy.RECIPE.unet_steps + 1)) != (
        toy.recipe_key()
    )
    monkeypatch.delenv(toy.CACHE_ENV)
    assert toy.toy_cache_dir().parent == toy.DEFAULT_CACHE_ROOT.expanduser()


def test_a_build_is_written_aside_and_renamed_into_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    builds: list[int] = []

    def fake_build(*_args: Any, **_kwargs: Any) -> Any:
        builds.append(1)
        return build_tiny_pipeline(seed=0)

    monkeypatch.setattr(toy, "build_toy_pipeline", fake_build)
    target = tmp_path / "toy-x"
    target.mkdir()  # a leftover of an interrupted copy: not a built pipeline
    (target / "junk").write_text("")
    assert toy.ensure_toy_pipeline(target, progress=False) == target
    assert (target / "model_index.json").is_file() and (target / "toy_recipe.json").is_file()
    assert not (target / "junk").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".toy-x.lock", "toy-x"]
    toy.ensure_toy_pipeline(target, progress=False)  # built: nothing is rebuilt
    assert builds == [1]


def test_the_toy_vae_encodes_block_means_and_decodes_by_upsampling() -> None:
    import torch

    from hps.diffusion.assembly import assemble_pipeline

    vae = assemble_pipeline(seed=0, **toy.toy_components()).vae
    images, _ = toy_corpus.corpus(8, seed=1)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    toy.set_vae_to_block_averages(vae)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.sample()  # the posterior is its mean
        decoded = vae.decode(latents).sample
    block_means = torch.nn.functional.avg_pool2d(pixels, 4)
    assert latents.shape == (8, 4, 8, 8)
    assert torch.allclose(latents[:, :3], block_means, atol=1e-3)
    assert torch.allclose(latents[:, 3], torch.zeros(8, 8, 8), atol=1e-3)
    upsampled = torch.nn.functional.interpolate(block_means, scale_factor=4, mode="nearest")
    assert torch.allclose(decoded, upsampled, atol=1e-3)


@pytest.fixture(scope="module")
def toy_pipe() -> Iterator[Any]:
    # One thread: on a busy 2-core machine, two torch threads made these tests ~20x slower.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield open_pipeline("toy", "cpu")
    finally:
        torch.set_num_threads(threads)


def held_out_samples(
    pipe: Any, negative_prompt: str | None = None
) -> list[tuple[Scene, np.ndarray]]:
    scenes = toy_corpus.scenes(held_out=True)
    return [
        (
            scene,
            np.asarray(
                generate(
                    pipe, scene.caption, [1000 + i], steps=10, negative_prompt=negative_prompt
                )[0].image
            ),
        )
        for i, scene in enumerate(scenes)
    ]


@pytest.mark.slow
def test_toy_samples_follow_their_prompts_on_unseen_colour_shape_pairs(toy_pipe: Any) -> None:
    samples = held_out_samples(toy_pipe)
    agrees = [dominant_colour(image) == scene.colour for scene, image in samples]
    large = [
        agree for agree, (scene, _) in zip(agrees, samples, strict=True) if scene.size == "large"
    ]
    assert len(samples) == 72
    assert np.mean(agrees) >= MIN_COLOUR_AGREEMENT, f"colour agreement {np.mean(agrees):.2f}"
    assert np.mean(large) >= MIN_COLOUR_AGREEMENT_LARGE, f"large figures {np.mean(large):.2f}"


@pytest.mark.slow
def test_the_negative_prompt_is_a_neutral_phrase_to_the_base_toy(toy_pipe: Any) -> None:
    # Stable Diffusion knows "Weird image. " before adaptation and it barely moves its pictures;
    # the toy saw the phrase on ordinary pictures, so the negative prompt alone does not move
    # its pictures by chance (which would confound the three-arm evaluation).
    plain = held_out_samples(toy_pipe)
    negative = held_out_samples(toy_pipe, NEGATIVE_PROMPT)
    agrees = [dominant_colour(image) == scene.colour for scene, image in negative]
    assert np.mean(agrees) >= MIN_COLOUR_AGREEMENT, f"colour agreement {np.mean(agrees):.2f}"

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a.astype(float) - b).mean())

    moved = np.mean([distance(a, b) for (_, a), (_, b) in zip(plain, negative, strict=True)])
    next_prompt = np.mean([distance(a, b) for (_, a), (_, b) in itertools.pairwise(plain)])
    assert moved < 0.5 * next_prompt, (moved, next_prompt)


@pytest.mark.slow
def test_toy_is_a_stable_diffusion_pipeline_that_lora_trains_on(
    toy_pipe: Any, tmp_path: Path
) -> None:
    from diffusers import StableDiffusionPipeline

    assert isinstance(toy_pipe, StableDiffusionPipeline)
    prompt = "a large blue circle on a black background"
    first = generate(toy_pipe, prompt, [7, 8], steps=4)
    assert first[0].image.size == (32, 32)
    again = generate(toy_pipe, prompt, [7], steps=4)
    assert np.array_equal(np.asarray(first[0].image), np.asarray(again[0].image))
    examples = [Example(g.image, prompt) for g in first]
    losses = train_lora(toy_pipe, examples, LoraConfig(steps=3, batch_size=2, lr=1e-3))
    assert len(losses) == 3 and all(np.isfinite(losses))
    save_lora(toy_pipe, tmp_path / "lora")
    unload_loras(toy_pipe)
    use_lora(toy_pipe, tmp_path / "lora", "toy-test")
    assert generate(toy_pipe, prompt, [7], steps=4)[0].image.size == (32, 32)
    unload_loras(toy_pipe)
