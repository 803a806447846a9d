"""Judging an adaptation fairly: three arms on held-out prompts, from the same seeds.

- ``base``: the base model, no negative prompt (how people use it);
- ``base_negative``: the base model with the negative prompt "Weird image. ";
- ``adapted``: the adapted model with the negative prompt (how the paper uses it).

``adapted`` vs ``base`` is the paper's comparison (``win_rate``); ``adapted`` vs
``base_negative`` isolates the LoRA's own effect (``win_rate_vs_base_negative``): on a model
that never learnt what "Weird image. " means, the negative prompt alone can move every image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from hps.diffusion.pipelines import GeneratedImage, generate
from hps.evaluation import bootstrap_interval

if TYPE_CHECKING:
    from hps.evaluation import Scorer

ARM_LABELS = ("base", "base + neg", "adapted + neg")
EVAL_SEED_BASE = 90_000
GRID_ROWS = 6
LABEL_HEIGHT = 14

Arm = list[list[GeneratedImage]]  # per prompt, one image per evaluation seed


@dataclass
class AdaptationEvaluation:
    """Mean HPS of each arm with a 95% bootstrap interval, and the adapted arm's win rates.
    ``base_*``, ``adapted_*``, ``win_rate`` keep their first meaning (the paper's comparison:
    adapted + negative prompt vs base without it)."""

    base_mean: float
    base_interval: tuple[float, float]
    base_negative_mean: float
    base_negative_interval: tuple[float, float]
    adapted_mean: float
    adapted_interval: tuple[float, float]
    win_rate: float
    win_rate_vs_base_negative: float
    pairs: int
    grid_png: str
    negative_prompt: str


def eval_seeds(prompt_index: int, per_prompt: int) -> list[int]:
    """The seeds of a held-out prompt, the same in every arm."""
    return [EVAL_SEED_BASE + prompt_index * 100 + k for k in range(per_prompt)]


def generate_arm(
    pipe: Any,
    prompts: Sequence[str],
    per_prompt: int,
    negative_prompt: str | None,
    **generation: Any,
) -> Arm:
    """One arm's images: every held-out prompt from its evaluation seeds."""
    return [
        generate(
            pipe,
            prompt,
            eval_seeds(index, per_prompt),
            negative_prompt=negative_prompt,
            **generation,
        )
        for index, prompt in enumerate(prompts)
    ]


def win_rate(challenger: Sequence[float], reference: Sequence[float]) -> float:
    """Share of pairs the challenger wins (a tie counts half)."""
    wins = [
        1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(challenger, reference, strict=True)
    ]
    return sum(wins) / len(wins) if wins else float("nan")


def arm_scores(scorer: Scorer, prompts: Sequence[str], arm: Arm) -> list[float]:
    """HPS of an arm's images, flattened in prompt then seed order."""
    scores: list[float] = []
    for prompt, row in zip(prompts, arm, strict=True):
        scores += scorer.score(prompt, [g.image for g in row])
    return scores


def side_by_side(prompts: Sequence[str], arms: Sequence[Arm], path: Path) -> Path:
    """A grid: a header naming the arms, then one row per prompt (at most ``GRID_ROWS``) with
    each arm's images in turn, the same seeds in the same column of every arm."""
    rows = min(len(prompts), GRID_ROWS)
    per = len(arms[0][0]) if arms and arms[0] else 0
    tile = arms[0][0][0].image.width if per else 64
    block = tile * per
    width = max(1, block * len(arms))
    grid = Image.new("RGB", (width, LABEL_HEIGHT + rows * (tile + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(grid)
    for number, label in enumerate(ARM_LABELS[: len(arms)]):
        draw.text((number * block + 2, 1), label, fill=(0, 0, 128))
    for row in range(rows):
        top = LABEL_HEIGHT + row * (tile + LABEL_HEIGHT)
        draw.text((2, top + 1), prompts[row][:80], fill=(0, 0, 0))
        images = [generated for arm in arms for generated in arm[row]]
        for column, generated in enumerate(images):
            grid.paste(generated.image.resize((tile, tile)), (column * tile, top + LABEL_HEIGHT))
        for boundary in range(1, len(arms)):
            x = boundary * block
            draw.line([(x, top + LABEL_HEIGHT), (x, top + LABEL_HEIGHT + tile - 1)], "white", 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def compare_arms(
    scorer: Scorer,
    prompts: Sequence[str],
    arms: tuple[Arm, Arm, Arm],
    grid_path: Path,
    negative_prompt: str,
) -> AdaptationEvaluation:
    """Score the three arms (base, base + negative prompt, adapted + negative prompt) on the
    same prompts and seeds; the grid shows them side by side."""
    base, base_negative, adapted = (arm_scores(scorer, prompts, arm) for arm in arms)
    return AdaptationEvaluation(
        base_mean=sum(base) / len(base),
        base_interval=bootstrap_interval(base),
        base_negative_mean=sum(base_negative) / len(base_negative),
        base_negative_interval=bootstrap_interval(base_negative, seed=2),
        adapted_mean=sum(adapted) / len(adapted),
        adapted_interval=bootstrap_interval(adapted, seed=1),
        win_rate=win_rate(adapted, base),
        win_rate_vs_base_negative=win_rate(adapted, base_negative),
        pairs=len(adapted),
        grid_png=str(side_by_side(prompts, arms, grid_path)),
        negative_prompt=negative_prompt,
    )
