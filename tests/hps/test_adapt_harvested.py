"""Adapting from harvested image sets (the paper's selection on stored sets) and the three-arm
evaluation (base, base + negative prompt, adapted + negative prompt) on the tiny pipeline."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from hps.diffusion.adapt import AdaptConfig, adapt
from hps.diffusion.harvested import (
    HarvestedSelection,
    ImageSet,
    human_favourite,
    select_from_sets,
    without_prompts,
)
from hps.diffusion.lora_training import Example, LoraConfig, draw_caption
from hps.diffusion.pipelines import NEGATIVE_PROMPT, build_tiny_pipeline, generate
from hps.diffusion.selection import sharpness
from hps.diffusion.three_arms import win_rate
from hps.pixels import ImageSource


class BrightnessScorer:
    """A stand-in HPS model: brighter is better (a score step of 1 per 20 grey levels)."""

    def score(
        self, prompts: str | Sequence[str], images: Sequence[ImageSource], *, batch_size: int = 8
    ) -> list[float]:
        return [
            float(np.asarray(image, dtype=np.float32).mean() - 128.0) / 20.0
            for image in images
            if isinstance(image, Image.Image)
        ]


def grey(level: int, size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), (level, level, level))


def textured(level: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-40, 41, size=(32, 32, 3))
    return Image.fromarray(np.clip(level + noise, 0, 255).astype(np.uint8))


def spread_set(prompt: str, picked: tuple[int, ...] = ()) -> ImageSet:
    """A set with one clearly best (index 0) and one clearly worst (index 3) image."""
    return ImageSet(prompt, (grey(250), grey(128), grey(128), grey(0)), picked)


SCORER = BrightnessScorer()


def test_positive_and_negative_per_set_with_captions() -> None:
    examples, stats = select_from_sets([spread_set("a fox")], SCORER, HarvestedSelection())
    assert [(e.caption, e.image.getpixel((0, 0))) for e in examples] == [
        ("a fox", (250, 250, 250)),
        ("Weird image. a fox", (0, 0, 0)),
    ]
    assert stats["positives"] == 1 and stats["negatives"] == 1
    assert stats["harvested_prompts"] == 1 and stats["harvested_images"] == 4
    # the negative is also trained with the negative prompt alone (what inference asks for)
    assert [e.caption_alone for e in examples] == [None, NEGATIVE_PROMPT]


def test_a_negative_is_captioned_alone_the_configured_share_of_draws() -> None:
    negative = Example(grey(0), "Weird image. a fox", NEGATIVE_PROMPT)
    positive = Example(grey(250), "a fox")
    rng = random.Random(0)
    draws = [draw_caption(negative, 0.5, rng) for _ in range(2000)]
    assert set(draws) == {"Weird image. a fox", NEGATIVE_PROMPT}
    assert 0.45 < draws.count(NEGATIVE_PROMPT) / len(draws) < 0.55
    assert {draw_caption(negative, 0.0, rng) for _ in range(200)} == {"Weird image. a fox"}
    assert {draw_caption(positive, 1.0, rng) for _ in range(200)} == {"a fox"}


def test_sets_under_four_images_are_skipped() -> None:
    small = ImageSet("a small set", (grey(250), grey(128), grey(0)))
    examples, stats = select_from_sets([small, spread_set("a fox")], SCORER)
    assert {e.caption for e in examples} == {"a fox", "Weird image. a fox"}
    assert stats["skipped_small"] == 1 and stats["harvested_sets"] == 2
    assert stats["harvested_sets_used"] == 1 and stats["harvested_images"] == 4


def test_human_picks_add_positives_and_overrule_negatives() -> None:
    # Two people picked image 1 (a middling one): it is a positive too.
    examples, stats = select_from_sets([spread_set("a fox", picked=(1, 1, 2))], SCORER)
    positives = [e.image.getpixel((0, 0)) for e in examples if e.caption == "a fox"]
    assert positives == [(250, 250, 250), (128, 128, 128)]
    assert stats["human_positives"] == 1 and stats["negatives"] == 1
    # Someone picked the image HPS would call weird: it is not used as a negative.
    examples, stats = select_from_sets([spread_set("a fox", picked=(3,))], SCORER)
    assert not any(e.caption.startswith("Weird image. ") for e in examples)
    assert stats["negatives"] == 0 and stats["negatives_overruled_by_picks"] == 1
    assert stats["human_positives"] == 1
    # Picks can be ignored.
    examples, stats = select_from_sets(
        [spread_set("a fox", picked=(1,))], SCORER, HarvestedSelection(human_picks=False)
    )
    assert len(examples) == 2 and stats["human_positives"] == 0


def test_human_favourite_needs_a_unique_most_picked_position() -> None:
    assert human_favourite([2, 2, 1], 4) == 2
    assert human_favourite([2, 1], 4) is None  # tied
    assert human_favourite([], 4) is None
    assert human_favourite([7], 4) is None  # out of range


def test_blurry_images_are_dropped_before_scoring() -> None:
    images = [textured(level, seed) for seed, level in enumerate((230, 140, 120, 20))]
    blurred_best = images[0].filter(ImageFilter.GaussianBlur(3))
    image_set = ImageSet("a fox", (blurred_best, *images[1:], textured(128, 9)), picked=(0,))
    threshold = min(sharpness(i) for i in image_set.images[1:]) / 2
    assert sharpness(blurred_best) < threshold
    rule = HarvestedSelection(blur_threshold=threshold)
    examples, stats = select_from_sets([image_set], SCORER, rule)
    assert stats["blurry"] == 1
    assert all(e.image is not blurred_best for e in examples)  # nor as the humans' pick
    assert stats["human_positives"] == 0


def test_held_out_prompts_never_train() -> None:
    sets = [spread_set("A Red  Fox"), spread_set("a cat")]
    assert [s.prompt for s in without_prompts(sets, ["a red fox"])] == ["a cat"]


def test_win_rate_counts_ties_half() -> None:
    assert win_rate([2.0, 1.0, 0.0], [1.0, 1.0, 1.0]) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=0)


def test_adapt_from_harvested_sets_reports_three_arms(pipe, tmp_path: Path) -> None:
    sets = [spread_set(f"a scene {i}") for i in range(3)]
    sets.append(ImageSet("a cat", sets[0].images))  # a held-out prompt: must not train
    sets.append(ImageSet("a few", sets[1].images[:3]))  # under four images: skipped
    config = AdaptConfig(
        inference_steps=2,
        eval_images_per_prompt=2,
        lora=LoraConfig(steps=2, lr=1e-3, batch_size=2),
    )
    result = adapt(pipe, SCORER, [], ["a cat"], tmp_path, config, harvested=sets)
    metadata = result.metadata
    assert metadata["source"] == "harvested"
    selection = metadata["selection"]
    assert selection["harvested_held_out"] == 1 and selection["skipped_small"] == 1
    assert selection["harvested_prompts"] == 3 and selection["harvested_images"] == 12
    assert "generated" not in selection
    evaluation = metadata["evaluation"]
    for arm in ("base", "base_negative", "adapted"):
        low, high = evaluation[f"{arm}_interval"]
        assert low <= evaluation[f"{arm}_mean"] <= high
    assert evaluation["pairs"] == 2 and evaluation["negative_prompt"] == NEGATIVE_PROMPT
    assert 0.0 <= evaluation["win_rate"] <= 1.0
    assert 0.0 <= evaluation["win_rate_vs_base_negative"] <= 1.0
    grid = Image.open(evaluation["grid_png"])
    assert grid.width == 3 * 2 * 64  # three arms of two 64-pixel images
    saved = json.loads((result.lora_dir / "hps_lora.json").read_text())
    assert saved["evaluation"]["base_negative_mean"] == evaluation["base_negative_mean"]


def test_base_arms_differ_only_by_the_negative_prompt(pipe) -> None:
    """Whatever LoRA the pipeline holds, the two base arms share seeds and differ only by the
    negative prompt."""
    from hps.diffusion.three_arms import eval_seeds, generate_arm

    base = generate_arm(pipe, ["a cat", "a dog"], 2, None, steps=2)
    negative = generate_arm(pipe, ["a cat", "a dog"], 2, NEGATIVE_PROMPT, steps=2)
    assert [[g.seed for g in row] for row in base] == [[g.seed for g in row] for row in negative]
    assert [g.seed for g in base[1]] == eval_seeds(1, 2)
    by_hand = generate(pipe, "a dog", eval_seeds(1, 2), steps=2, negative_prompt=NEGATIVE_PROMPT)
    for made, again in zip(negative[1], by_hand, strict=True):
        assert np.array_equal(np.asarray(made.image), np.asarray(again.image))
    assert not np.array_equal(np.asarray(base[1][0].image), np.asarray(negative[1][0].image))


def write_export(root: Path) -> None:
    """A small export folder as ``hps export`` writes it (HPD v1 manifests, PNG folders): two
    picks on one training set of four, one set of three, one held-out set of four."""

    def record(split: str, prompt: str, levels: Sequence[int], pick: int) -> dict[str, object]:
        paths = []
        for level in levels:
            relative = f"images/{split}/{prompt.replace(' ', '_')}-{level}.png"
            textured(level, level).save(root / "hpd" / relative)
            paths.append(relative)
        return {"prompt": prompt, "file_path": paths, "human_preference": pick}

    for split in ("train", "test"):
        (root / "hpd" / "images" / split).mkdir(parents=True)
    train = [
        record("train", "a red square", (220, 130, 120, 30), 1),
        record("train", "a red square", (220, 130, 120, 30), 1),
        record("train", "a blue circle", (200, 100, 40), 0),
    ]
    (root / "hpd" / "v1_train.json").write_text(json.dumps(train))
    test = [record("test", "a green star", (90, 100, 110, 120), 2)]
    (root / "hpd" / "v1_test.json").write_text(json.dumps(test))


def test_hps_adapt_source_harvested_reads_an_export_folder(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    write_export(tmp_path / "export")
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "adapt",
            "--pipeline",
            "tiny",
            "--arch",
            "tiny",
            "--source",
            "harvested",
            "--harvested",
            str(tmp_path / "export"),
            "--out",
            str(tmp_path / "out"),
            "--alpha",
            "0.5",  # below 1: every set of four has a positive and a negative
            "--inference-steps",
            "2",
            "--lora-steps",
            "2",
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    selection = summary["selection"]
    assert summary["source"] == "harvested" and summary["train_prompts"] == 0
    assert selection["harvested_sets"] == 2 and selection["skipped_small"] == 1
    assert selection["harvested_prompts"] == 1 and selection["harvested_images"] == 4
    assert selection["positives"] == 1 and selection["negatives"] == 1
    assert summary["eval_prompts"] == 1  # the export's test split, held out
    evaluation = summary["evaluation"]
    assert {"base_mean", "base_negative_mean", "adapted_mean", "win_rate"} <= set(evaluation)
    assert (Path(summary["lora_dir"]) / "pytorch_lora_weights.safetensors").is_file()


def test_hps_adapt_source_options_are_checked() -> None:
    import argparse

    from cli.commands.adapt import training_data

    def args(**given: object) -> argparse.Namespace:
        defaults = {"source": "generated", "prompts": None, "harvested": None}
        return argparse.Namespace(**{**defaults, "eval_prompts": None, **given})

    with pytest.raises(ValueError, match="--source generated needs --prompts"):
        training_data(args(), 4)
    with pytest.raises(ValueError, match="--source harvested needs --harvested"):
        training_data(args(source="harvested"), 4)
    with pytest.raises(ValueError, match="--harvested is read with --source harvested or both"):
        training_data(args(prompts="p.txt", harvested="x"), 4)
    with pytest.raises(ValueError, match="--prompts is read with --source generated or both"):
        training_data(args(source="harvested", prompts="p.txt", harvested="x"), 4)


def test_read_harvested_groups_picks_and_holds_out_the_test_split(tmp_path: Path) -> None:
    from cli.harvested_sets import read_harvested

    write_export(tmp_path / "export")
    read = read_harvested(tmp_path / "export", min_images=4)
    [image_set] = read.train
    assert image_set.prompt == "a red square" and image_set.picked == (1, 1)
    assert [image.size for image in image_set.images] == [(32, 32)] * 4
    assert read.skipped_small == 1 and read.held_out_prompts == ["a green star"]
    # One manifest on its own: nothing held out.
    alone = read_harvested(tmp_path / "export" / "hpd" / "v1_train.json", min_images=4)
    assert [s.prompt for s in alone.train] == ["a red square"] and alone.held_out_prompts == []
    with pytest.raises(ValueError, match="no such export folder or manifest"):
        read_harvested(tmp_path / "absent", min_images=4)


def test_lazy_images_decode_when_read_and_select_like_a_tuple() -> None:
    from hps.diffusion.harvested import LazyImages

    levels = (250, 128, 128, 0)
    reads: list[int] = []

    def read(index: int) -> Image.Image:
        reads.append(index)
        return grey(levels[index])

    lazy = ImageSet("a fox", LazyImages(4, read))
    assert reads == [] and len(lazy.images) == 4
    examples, _stats = select_from_sets([lazy], SCORER)
    assert sorted(reads) == [0, 1, 2, 3]  # each image decoded once
    assert [e.image.getpixel((0, 0)) for e in examples] == [(250, 250, 250), (0, 0, 0)]
    assert [i.getpixel((0, 0)) for i in lazy.images[-2:]] == [(128, 128, 128), (0, 0, 0)]
    with pytest.raises(IndexError):
        lazy.images[4]
