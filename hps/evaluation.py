"""Honest evaluation: top-1 choice accuracy and pairwise accuracy on held-out prompts, always
beside the untuned starting model, with bootstrap 95% intervals.

- top-1: the image the model scores highest is the one the human picked (ties excluded);
- pairwise (HPD v2 protocol): over every pair of images whose human order is known (all pairs
  of a ranked set; chosen-vs-each-other for a pick), the fraction the model orders the same way;
  equal model scores count one half.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from hps.training.manifests import PreferenceSet

BOOTSTRAP_SAMPLES = 1000


class Scorer(Protocol):
    def score(
        self, prompts: str | Sequence[str], images: Sequence[Any], *, batch_size: int = ...
    ) -> list[float]: ...


def score_sets(
    scorer: Scorer, sets: Sequence[PreferenceSet], batch_size: int = 32
) -> list[list[float]]:
    """Scores of every image of every set, grouped by set."""
    prompts = [s.prompt for s in sets for _ in s.images]
    images = [image for s in sets for image in s.images]
    flat = scorer.score(prompts, images, batch_size=batch_size)
    grouped, offset = [], 0
    for preference_set in sets:
        grouped.append(flat[offset : offset + len(preference_set.images)])
        offset += len(preference_set.images)
    return grouped


def top1_hits(scores: Sequence[Sequence[float]], sets: Sequence[PreferenceSet]) -> list[float]:
    """1.0 where the top-scored image is the chosen one, per set (tied sets left out)."""
    hits = []
    for set_scores, preference_set in zip(scores, sets, strict=True):
        if preference_set.is_tie:
            continue
        best = max(range(len(set_scores)), key=set_scores.__getitem__)
        hits.append(1.0 if best == preference_set.chosen_index else 0.0)
    return hits


def _human_pairs(preference_set: PreferenceSet) -> list[tuple[int, int]]:
    """(better, worse) index pairs whose human order is known."""
    if preference_set.ranks is not None:
        ranks = preference_set.ranks
        return [(i, j) for i in range(len(ranks)) for j in range(len(ranks)) if ranks[i] < ranks[j]]
    if preference_set.is_tie:
        return []
    chosen = preference_set.chosen_index
    return [(chosen, j) for j in range(len(preference_set.images)) if j != chosen]


def pairwise_rates(scores: Sequence[Sequence[float]], sets: Sequence[PreferenceSet]) -> list[float]:
    """Per set, the fraction of known pairs the model orders as the humans did."""
    rates = []
    for set_scores, preference_set in zip(scores, sets, strict=True):
        pairs = _human_pairs(preference_set)
        if not pairs:
            continue
        agree = 0.0
        for better, worse in pairs:
            if set_scores[better] > set_scores[worse]:
                agree += 1.0
            elif set_scores[better] == set_scores[worse]:
                agree += 0.5
        rates.append(agree / len(pairs))
    return rates


def bootstrap_interval(values: Sequence[float], *, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean (resampling sets, i.e. prompts)."""
    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP_SAMPLES))
    return (means[int(0.025 * BOOTSTRAP_SAMPLES)], means[int(0.975 * BOOTSTRAP_SAMPLES) - 1])


@dataclass(frozen=True)
class Metrics:
    top1_accuracy: float
    top1_interval: tuple[float, float]
    pairwise_accuracy: float
    pairwise_interval: tuple[float, float]
    sets: int


def metrics_of(scores: Sequence[Sequence[float]], sets: Sequence[PreferenceSet]) -> Metrics:
    """Top-1 and pairwise accuracy with their intervals."""
    hits = top1_hits(scores, sets)
    rates = pairwise_rates(scores, sets)
    return Metrics(
        top1_accuracy=sum(hits) / len(hits) if hits else float("nan"),
        top1_interval=bootstrap_interval(hits),
        pairwise_accuracy=sum(rates) / len(rates) if rates else float("nan"),
        pairwise_interval=bootstrap_interval(rates, seed=1),
        sets=len(hits),
    )


def evaluate(scorer: Scorer, sets: Sequence[PreferenceSet], *, batch_size: int = 32) -> Metrics:
    """Metrics of one scorer on ``sets``."""
    return metrics_of(score_sets(scorer, sets, batch_size), sets)


@dataclass(frozen=True)
class Comparison:
    """A model beside the untuned model it started from, on the same held-out sets."""

    model: Metrics
    baseline: Metrics
    model_name: str
    baseline_name: str

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape printed by ``hps eval``."""
        return {
            "top1_accuracy": self.model.top1_accuracy,
            "pairwise_accuracy": self.model.pairwise_accuracy,
            "top1_interval": list(self.model.top1_interval),
            "pairwise_interval": list(self.model.pairwise_interval),
            "sets": self.model.sets,
            "model": self.model_name,
            "baseline": {
                "name": self.baseline_name,
                **{
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in asdict(self.baseline).items()
                },
            },
        }

    def markdown(self) -> str:
        """A short report table."""

        def row(name: str, m: Metrics) -> str:
            return (
                f"| {name} | {m.top1_accuracy:.1%} ({m.top1_interval[0]:.1%} – "
                f"{m.top1_interval[1]:.1%}) | {m.pairwise_accuracy:.1%} "
                f"({m.pairwise_interval[0]:.1%} – {m.pairwise_interval[1]:.1%}) | {m.sets} |"
            )

        return "\n".join(
            [
                "| model | top-1 accuracy (95% CI) | pairwise accuracy (95% CI) | sets |",
                "| --- | --- | --- | --- |",
                row(self.model_name, self.model),
                row(f"{self.baseline_name} (untuned start)", self.baseline),
            ]
        )


def write_report(comparison: Comparison, out_dir: Path) -> tuple[Path, Path]:
    """Write ``evaluation.json`` and ``evaluation.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    md_path = out_dir / "evaluation.md"
    json_path.write_text(json.dumps(comparison.as_dict(), indent=2))
    md_path.write_text("# Evaluation on held-out prompts\n\n" + comparison.markdown() + "\n")
    return json_path, md_path
