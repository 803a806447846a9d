"""Adapting Stable Diffusion to human preference (the paper's recipe) and judging the result.

1. For each training prompt, generate k images (seeds recorded) and score them with HPS.
2. Drop blurry images; select a positive and a negative per prompt (``selection``).
3. Train a LoRA on positives (caption: the prompt), negatives (caption: "Weird image. " +
   prompt) and optional regularisation images.
4. On held-out prompts, generate with the base model and with the adapted one (negative prompt
   "Weird image. ") from the same seeds; compare mean HPS (bootstrap interval), win rate, and a
   side-by-side grid PNG.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from hps.diffusion.lora_training import Example, LoraConfig, train_lora
from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate, save_lora
from hps.diffusion.selection import (
    DEFAULT_ALPHA,
    NEGATIVE_CAPTION_PREFIX,
    is_blurry,
    select_examples,
)
from hps.evaluation import bootstrap_interval

if TYPE_CHECKING:
    from hps.scoring import HpsScorer

METADATA_FILE = "hps_lora.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

Progress = Callable[[float, str], bool]


@dataclass
class AdaptConfig:
    images_per_prompt: int = 8
    alpha: float = DEFAULT_ALPHA
    blur_threshold: float = 0.0  # variance of the Laplacian below which an image is dropped
    inference_steps: int = 25
    guidance_scale: float = 7.5
    size: int | None = None
    eval_images_per_prompt: int = 2
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class AdaptationEvaluation:
    base_mean: float
    base_interval: tuple[float, float]
    adapted_mean: float
    adapted_interval: tuple[float, float]
    win_rate: float
    pairs: int
    grid_png: str


@dataclass
class AdaptResult:
    lora_dir: Path
    metadata: dict[str, Any]
    evaluation: AdaptationEvaluation


def _stop_if_cancelled(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None and not progress(fraction, message):
        raise InterruptedError("adaptation cancelled")


def collect_examples(
    pipe: Any,
    scorer: HpsScorer,
    prompts: Sequence[str],
    config: AdaptConfig,
    progress: Progress | None = None,
) -> tuple[list[Example], dict[str, Any]]:
    """Generate, score, filter and select: the training examples and what was seen."""
    examples: list[Example] = []
    stats = {"prompts": len(prompts), "generated": 0, "blurry": 0, "positives": 0, "negatives": 0}
    for index, prompt in enumerate(prompts):
        seeds = [
            config.seed * 1_000_003 + index * 1000 + k for k in range(config.images_per_prompt)
        ]
        images = generate(
            pipe,
            prompt,
            seeds,
            steps=config.inference_steps,
            guidance_scale=config.guidance_scale,
            size=config.size,
        )
        stats["generated"] += len(images)
        sharp = [g for g in images if not is_blurry(g.image, config.blur_threshold)]
        stats["blurry"] += len(images) - len(sharp)
        if sharp:
            scores = scorer.score(prompt, [g.image for g in sharp])
            chosen = select_examples(scores, config.alpha)
            if chosen.positive is not None:
                examples.append(Example(sharp[chosen.positive].image, prompt))
                stats["positives"] += 1
            if chosen.negative is not None:
                examples.append(
                    Example(sharp[chosen.negative].image, NEGATIVE_CAPTION_PREFIX + prompt)
                )
                stats["negatives"] += 1
        _stop_if_cancelled(
            progress,
            0.5 * (index + 1) / len(prompts),
            f"generated for {index + 1}/{len(prompts)} prompts",
        )
    return examples, stats


def regularization_examples(folder: Path) -> list[Example]:
    """Images of ``folder`` with a caption in a ``.txt`` file of the same name."""
    examples = []
    for image_path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        caption_path = image_path.with_suffix(".txt")
        if not caption_path.is_file():
            raise ValueError(f"{image_path}: regularisation image without {caption_path.name}")
        examples.append(
            Example(Image.open(image_path).convert("RGB"), caption_path.read_text().strip())
        )
    return examples


def _eval_images(
    pipe: Any, prompts: Sequence[str], config: AdaptConfig, negative: str | None
) -> list[list[Any]]:
    return [
        generate(
            pipe,
            prompt,
            [90_000 + index * 100 + k for k in range(config.eval_images_per_prompt)],
            steps=config.inference_steps,
            guidance_scale=config.guidance_scale,
            negative_prompt=negative,
            size=config.size,
        )
        for index, prompt in enumerate(prompts)
    ]


def side_by_side(
    prompts: Sequence[str], base: list[list[Any]], adapted: list[list[Any]], path: Path
) -> Path:
    """A grid: one row per prompt, base images then adapted images from the same seeds."""
    rows = min(len(prompts), 6)
    per = len(base[0]) if base else 0
    tile = base[0][0].image.width if per else 64
    label = 14
    grid = Image.new("RGB", (tile * per * 2, rows * (tile + label)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for row in range(rows):
        top = row * (tile + label)
        draw.text((2, top), f"{prompts[row][:60]}  (left: base, right: adapted)", fill=(0, 0, 0))
        for column, generated in enumerate(base[row] + adapted[row]):
            grid.paste(generated.image.resize((tile, tile)), (column * tile, top + label))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def adapt(
    pipe: Any,
    scorer: HpsScorer,
    train_prompts: Sequence[str],
    eval_prompts: Sequence[str],
    out_dir: Path,
    config: AdaptConfig | None = None,
    *,
    regularization: Path | None = None,
    base_description: str = "",
    progress: Progress | None = None,
) -> AdaptResult:
    """Run the whole recipe; write the LoRA, its metadata and the evaluation grid."""
    config = config or AdaptConfig()
    random.seed(config.seed)
    base_eval = _eval_images(pipe, eval_prompts, config, None)  # before the LoRA exists
    examples, stats = collect_examples(pipe, scorer, train_prompts, config, progress)
    if regularization is not None:
        extra = regularization_examples(regularization)
        examples += extra
        stats["regularization"] = len(extra)

    def on_step(step: int, total: int, loss: float) -> bool:
        return progress is None or progress(
            0.5 + 0.4 * step / total, f"LoRA step {step}/{total}, loss {loss:.4f}"
        )

    losses = train_lora(pipe, examples, config.lora, on_step=on_step)
    if len(losses) < config.lora.steps:
        raise InterruptedError("adaptation cancelled")
    lora_dir = out_dir / "lora"
    save_lora(pipe, lora_dir)
    _stop_if_cancelled(progress, 0.9, "evaluating on held-out prompts")
    adapted_eval = _eval_images(pipe, eval_prompts, config, NEGATIVE_PROMPT)
    evaluation = compare(
        scorer, eval_prompts, base_eval, adapted_eval, out_dir / "adaptation_grid.png"
    )
    metadata = {
        "kind": "lora",
        "base": base_description,
        "negative_prompt": NEGATIVE_PROMPT,
        "selection": {"alpha": config.alpha, "blur_threshold": config.blur_threshold, **stats},
        "lora": asdict(config.lora),
        "final_loss": losses[-1],
        "evaluation": asdict(evaluation),
        "train_prompts": len(train_prompts),
        "eval_prompts": len(eval_prompts),
    }
    (lora_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    return AdaptResult(lora_dir, metadata, evaluation)


def compare(
    scorer: HpsScorer,
    prompts: Sequence[str],
    base: list[list[Any]],
    adapted: list[list[Any]],
    grid_path: Path,
) -> AdaptationEvaluation:
    """Mean HPS of both models on the same prompts and seeds, and the adapted win rate."""
    base_scores: list[float] = []
    adapted_scores: list[float] = []
    for prompt, base_row, adapted_row in zip(prompts, base, adapted, strict=True):
        base_scores += scorer.score(prompt, [g.image for g in base_row])
        adapted_scores += scorer.score(prompt, [g.image for g in adapted_row])
    wins = [
        1.0 if a > b else 0.5 if a == b else 0.0
        for a, b in zip(adapted_scores, base_scores, strict=True)
    ]
    return AdaptationEvaluation(
        base_mean=sum(base_scores) / len(base_scores),
        base_interval=bootstrap_interval(base_scores),
        adapted_mean=sum(adapted_scores) / len(adapted_scores),
        adapted_interval=bootstrap_interval(adapted_scores, seed=1),
        win_rate=sum(wins) / len(wins),
        pairs=len(wins),
        grid_png=str(side_by_side(prompts, base, adapted, grid_path)),
    )
