"""Adapting Stable Diffusion to human preference (the paper's recipe) and judging the result.

1. The examples, from either source or both:
   - *generated*: for each training prompt, generate k images (seeds recorded), score them
     with HPS, drop blurry ones and select a positive and a negative (``selection``);
   - *harvested*: the same rule on image sets that already exist (the paper used DiffusionDB;
     here the community's harvested sets), where the humans' picks may add positives
     (``harvested``). Sets whose prompt is held out never train.
2. Train a LoRA on positives (caption: the prompt), negatives (caption: "Weird image. " +
   prompt) and optional regularisation images.
3. On held-out prompts, from the same seeds, three arms (``three_arms``): base, base with the
   negative prompt, adapted with the negative prompt; mean HPS (bootstrap intervals), win
   rates, and a side-by-side grid PNG.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from hps.diffusion.harvested import (
    HarvestedSelection,
    ImageSet,
    examples_of_set,
    select_from_sets,
    without_prompts,
)
from hps.diffusion.lora_training import Example, LoraConfig, train_lora
from hps.diffusion.pipelines import NEGATIVE_PROMPT, generate, save_lora
from hps.diffusion.selection import (
    DEFAULT_ALPHA,
    MIN_IMAGES,
)
from hps.diffusion.three_arms import AdaptationEvaluation, compare_arms, generate_arm

if TYPE_CHECKING:
    from hps.evaluation import Scorer

__all__ = ["AdaptConfig", "AdaptResult", "AdaptationEvaluation", "ImageSet", "adapt"]

METADATA_FILE = "hps_lora.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

Progress = Callable[[float, str], bool]


@dataclass
class AdaptConfig:
    """The recipe's settings (the LoRA's in ``lora``)."""

    images_per_prompt: int = 8
    alpha: float = DEFAULT_ALPHA
    blur_threshold: float = 0.0  # variance of the Laplacian below which an image is dropped
    inference_steps: int = 25
    guidance_scale: float = 7.5
    size: int | None = None
    eval_images_per_prompt: int = 4
    seed: int = 0
    min_images: int = MIN_IMAGES  # a harvested set with fewer images is skipped
    human_picks: bool = True  # a harvested set's most-picked image is a positive too
    lora: LoraConfig = field(default_factory=LoraConfig)

    def selection_rule(self) -> HarvestedSelection:
        """The paper's selection rule with this configuration (generated and harvested sets)."""
        return HarvestedSelection(
            self.alpha, self.blur_threshold, self.min_images, self.human_picks
        )


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
    scorer: Scorer,
    prompts: Sequence[str],
    config: AdaptConfig,
    progress: Progress | None = None,
) -> tuple[list[Example], dict[str, Any]]:
    """Generate, score, filter and select: the training examples and what was seen."""
    examples: list[Example] = []
    stats = Counter(prompts=len(prompts), generated=0, blurry=0, positives=0, negatives=0)
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
        generated = ImageSet(prompt, [g.image for g in images])  # nobody picked among them
        examples += examples_of_set(generated, scorer, config.selection_rule(), stats)
        _stop_if_cancelled(
            progress,
            0.5 * (index + 1) / len(prompts),
            f"generated for {index + 1}/{len(prompts)} prompts",
        )
    return examples, dict(stats)


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


def source_name(train_prompts: Sequence[str], harvested: Sequence[ImageSet]) -> str:
    """``generated``, ``harvested`` or ``both``: where the examples come from."""
    if train_prompts and harvested:
        return "both"
    return "harvested" if harvested else "generated"


def _after_harvested(progress: Progress) -> Progress:
    """Generation's share of the progress (0 to 0.5) moved to 0.25 to 0.5."""
    return lambda fraction, message: progress(0.25 + fraction / 2, message)


def gather_examples(
    pipe: Any,
    scorer: Scorer,
    train_prompts: Sequence[str],
    harvested: Sequence[ImageSet],
    config: AdaptConfig,
    progress: Progress | None = None,
) -> tuple[list[Example], dict[str, Any]]:
    """The examples of both sources and the counts of what was seen (summed where both count
    the same thing: ``blurry``, ``positives``, ``negatives``)."""
    examples: list[Example] = []
    stats: Counter[str] = Counter()
    if harvested:

        def on_set(done: int, total: int) -> None:
            share = 0.25 if train_prompts else 0.5
            _stop_if_cancelled(progress, share * done / total, f"scored {done}/{total} sets")

        chosen, counts = select_from_sets(harvested, scorer, config.selection_rule(), on_set)
        examples += chosen
        stats.update(counts)
    if train_prompts:
        if harvested and progress is not None:
            progress = _after_harvested(progress)
        chosen, counts = collect_examples(pipe, scorer, train_prompts, config, progress)
        examples += chosen
        stats.update(counts)
    return examples, {"source": source_name(train_prompts, harvested), **stats}


def adapt(
    pipe: Any,
    scorer: Scorer,
    train_prompts: Sequence[str],
    eval_prompts: Sequence[str],
    out_dir: Path,
    config: AdaptConfig | None = None,
    *,
    harvested: Sequence[ImageSet] = (),
    regularization: Path | None = None,
    base_description: str = "",
    progress: Progress | None = None,
) -> AdaptResult:
    """Run the whole recipe on examples generated for ``train_prompts`` and/or selected from
    ``harvested`` sets; write the LoRA, its metadata and the three-arm evaluation grid."""
    config = config or AdaptConfig()
    random.seed(config.seed)
    if not eval_prompts:
        raise ValueError("no held-out prompts to evaluate on")
    arm_settings = {
        "steps": config.inference_steps,
        "guidance_scale": config.guidance_scale,
        "size": config.size,
    }
    per_prompt = config.eval_images_per_prompt
    # Both base arms before the LoRA exists: the same seeds, only the negative prompt differs.
    base = generate_arm(pipe, eval_prompts, per_prompt, None, **arm_settings)
    base_negative = generate_arm(pipe, eval_prompts, per_prompt, NEGATIVE_PROMPT, **arm_settings)
    held_out = len(harvested)
    harvested = without_prompts(harvested, eval_prompts)
    examples, stats = gather_examples(pipe, scorer, train_prompts, harvested, config, progress)
    if held_out != len(harvested):
        stats["harvested_held_out"] = held_out - len(harvested)
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
    adapted = generate_arm(pipe, eval_prompts, per_prompt, NEGATIVE_PROMPT, **arm_settings)
    evaluation = compare_arms(
        scorer,
        eval_prompts,
        (base, base_negative, adapted),
        out_dir / "adaptation_grid.png",
        NEGATIVE_PROMPT,
    )
    metadata = {
        "kind": "lora",
        "base": base_description,
        "negative_prompt": NEGATIVE_PROMPT,
        "source": stats["source"],
        "selection": {
            "alpha": config.alpha,
            "blur_threshold": config.blur_threshold,
            "min_images": config.min_images,
            "human_picks": config.human_picks,
            **stats,
        },
        "lora": asdict(config.lora),
        "final_loss": losses[-1],
        "evaluation": asdict(evaluation),
        "train_prompts": len(train_prompts),
        "eval_prompts": len(eval_prompts),
    }
    (lora_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2, default=str))
    return AdaptResult(lora_dir, metadata, evaluation)
