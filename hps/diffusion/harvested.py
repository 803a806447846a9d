"""The paper's selection applied to image sets that already exist (the paper adapted from
DiffusionDB's generations; this platform has the community's harvested sets).

Per set with at least ``min_images`` images: drop the blurry ones, score the rest with HPS, and
take the positive and negative of :func:`hps.diffusion.selection.select_examples` (caption: the
prompt, and "Weird image. " + the prompt). With ``human_picks``, the image the humans picked
most (a unique most-picked position, not blurry) is a positive too, and is never used as the
set's negative: the people who looked at it outrank the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

from PIL import Image

from hps.diffusion.lora_training import Example
from hps.diffusion.selection import (
    DEFAULT_ALPHA,
    MIN_IMAGES,
    NEGATIVE_CAPTION_PREFIX,
    is_blurry,
    select_examples,
)

if TYPE_CHECKING:
    from hps.evaluation import Scorer


class LazyImages(Sequence[Image.Image]):
    """``size`` images, each made by ``read(index)`` when it is read (not kept): a stored set
    is decoded when the selection reads it, and only the chosen images stay in memory."""

    def __init__(self, size: int, read: Callable[[int], Image.Image]) -> None:
        self.size, self.read = size, read

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Image.Image]: ...

    def __getitem__(self, index: int | slice) -> Image.Image | Sequence[Image.Image]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not -self.size <= index < self.size:
            raise IndexError(index)
        return self.read(index % self.size)


@dataclass(frozen=True)
class ImageSet:
    """One prompt's stored images in position order, and the positions humans picked (one
    entry per pick; several people may pick the same image). ``images`` may be a lazy
    sequence: it is read once, when the set is selected from, and only the chosen images are
    kept."""

    prompt: str
    images: Sequence[Image.Image]
    picked: tuple[int, ...] = ()


@dataclass(frozen=True)
class HarvestedSelection:
    """How the paper's rule reads the harvested sets."""

    alpha: float = DEFAULT_ALPHA
    blur_threshold: float = 0.0
    min_images: int = MIN_IMAGES
    human_picks: bool = True


def human_favourite(picked: Sequence[int], size: int) -> int | None:
    """The position picked most often, if exactly one position has that count."""
    counts = Counter(p for p in picked if 0 <= p < size)
    if not counts:
        return None
    ranked = counts.most_common(2)
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def normalized_prompt(prompt: str) -> str:
    """The form two prompts are compared in (held-out prompts never train)."""
    return " ".join(prompt.lower().split())


def without_prompts(sets: Iterable[ImageSet], prompts: Iterable[str]) -> list[ImageSet]:
    """The sets whose prompt is not one of ``prompts`` (the held-out ones)."""
    excluded = {normalized_prompt(p) for p in prompts}
    return [s for s in sets if normalized_prompt(s.prompt) not in excluded]


def examples_of_set(
    image_set: ImageSet, scorer: Scorer, rule: HarvestedSelection, stats: Counter[str]
) -> list[Example]:
    """One prompt's LoRA examples by the paper's rule: blurry images dropped, the rest scored,
    a positive (caption: the prompt) and a negative ("Weird image. " + prompt) selected, the
    humans' favourite added as a positive when ``rule.human_picks``; ``stats`` counts
    ``blurry``, ``positives``, ``human_positives``, ``negatives`` and
    ``negatives_overruled_by_picks``. Generated and harvested images go through it alike."""
    images = tuple(image_set.images)
    sharp = [
        index for index, image in enumerate(images) if not is_blurry(image, rule.blur_threshold)
    ]
    stats["blurry"] += len(images) - len(sharp)
    if not sharp:
        return []
    scores = scorer.score(image_set.prompt, [images[i] for i in sharp])
    chosen = select_examples(scores, rule.alpha, rule.min_images)
    positive = None if chosen.positive is None else sharp[chosen.positive]
    negative = None if chosen.negative is None else sharp[chosen.negative]
    favourite = None
    if rule.human_picks:
        favourite = human_favourite(image_set.picked, len(images))
        favourite = favourite if favourite in sharp else None
    prompt = image_set.prompt
    examples = []
    if positive is not None:
        examples.append(Example(images[positive], prompt))
        stats["positives"] += 1
    if favourite is not None and favourite != positive:
        examples.append(Example(images[favourite], prompt))
        stats["human_positives"] += 1
    if negative is not None and negative != favourite:
        examples.append(
            Example(images[negative], NEGATIVE_CAPTION_PREFIX + prompt, NEGATIVE_CAPTION_PREFIX)
        )
        stats["negatives"] += 1
    elif negative is not None:
        stats["negatives_overruled_by_picks"] += 1
    return examples


def select_from_sets(
    sets: Sequence[ImageSet],
    scorer: Scorer,
    rule: HarvestedSelection | None = None,
    on_set: Callable[[int, int], None] | None = None,
) -> tuple[list[Example], dict[str, int]]:
    """The LoRA's training examples from stored sets, and counts of what was seen and used:
    ``harvested_sets``, ``harvested_prompts`` / ``harvested_images`` (sets of
    ``min_images``+ and their images), ``skipped_small``, ``blurry``, ``positives``,
    ``human_positives``, ``negatives``, ``negatives_overruled_by_picks``.
    ``on_set(done, total)`` is called after each set (it may raise to stop)."""
    rule = rule or HarvestedSelection()
    stats: Counter[str] = Counter()
    for key in ("harvested_sets_used", "harvested_images", "skipped_small", "positives"):
        stats[key] = 0
    stats["harvested_sets"] = len(sets)
    prompts: set[str] = set()
    examples: list[Example] = []
    for done, image_set in enumerate(sets, start=1):
        if len(image_set.images) < rule.min_images:
            stats["skipped_small"] += 1
        else:
            stats["harvested_sets_used"] += 1
            prompts.add(normalized_prompt(image_set.prompt))
            stats["harvested_images"] += len(image_set.images)
            examples += examples_of_set(image_set, scorer, rule, stats)
        if on_set is not None:
            on_set(done, len(sets))
    for key in ("blurry", "human_positives", "negatives", "negatives_overruled_by_picks"):
        stats[key] += 0
    stats["harvested_prompts"] = len(prompts)
    return examples, dict(stats)
