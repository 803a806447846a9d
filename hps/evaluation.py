"""Honest evaluation: top-1 choice accuracy and pairwise accuracy on held-out prompts, always
beside the untuned starting model, with bootstrap 95% intervals.

- top-1: the image the model scores highest is the one the human picked (ties excluded);
- pairwise: over every pair of images whose human order is known (the untied pairs of a ranked
  set; chosen-vs-each-other for a pick), the fraction the model orders the same way; equal
  model scores count one half;
- ranking accuracy, HPSv2's way (``ranking_accuracy_hpsv2``, on sets with human ranks: HPD v2
  test files): per set, 1 - inverted pairs / all pairs, then the mean over sets. A pair tied in
  the human ranks is never inverted (but stays in the denominator), and the model's ranking is
  a permutation: equal model scores rank the earlier image first, as HPSv2's ``argsort`` does.
  This is the number on HPSv2's leaderboard; with no ties it equals the pairwise accuracy.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
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


def model_ranks(set_scores: Sequence[float]) -> list[int]:
    """Each image's position (0 = best) when sorted by score, highest first; equal scores keep
    image order (HPSv2 ranks with ``argsort(-scores)``, which leaves them so)."""
    order = sorted(range(len(set_scores)), key=lambda index: -set_scores[index])
    positions = [0] * len(order)
    for position, index in enumerate(order):
        positions[index] = position
    return positions


def hpsv2_ranking_rates(
    scores: Sequence[Sequence[float]], sets: Sequence[PreferenceSet]
) -> list[float]:
    """Per set with human ranks, HPSv2's ranking accuracy: 1 - inverted pairs / all pairs (a
    pair tied in the human ranks is never inverted). Sets without ranks are left out."""
    rates = []
    for set_scores, preference_set in zip(scores, sets, strict=True):
        human = preference_set.ranks
        if human is None or len(human) < 2:
            continue
        model = model_ranks(set_scores)
        pairs = list(combinations(range(len(human)), 2))
        inverted = sum(1 for i, j in pairs if (model[i] - model[j]) * (human[i] - human[j]) < 0)
        rates.append(1.0 - inverted / len(pairs))
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
    # HPSv2's ranking accuracy: None when no set carries human ranks (only HPD v2 test files do).
    ranking_accuracy_hpsv2: float | None = None
    ranking_hpsv2_interval: tuple[float, float] | None = None
    ranked_sets: int = 0


def metrics_of(scores: Sequence[Sequence[float]], sets: Sequence[PreferenceSet]) -> Metrics:
    """Top-1, pairwise and (on ranked sets) HPSv2's ranking accuracy with their intervals."""
    hits = top1_hits(scores, sets)
    rates = pairwise_rates(scores, sets)
    ranking = hpsv2_ranking_rates(scores, sets)
    return Metrics(
        top1_accuracy=sum(hits) / len(hits) if hits else float("nan"),
        top1_interval=bootstrap_interval(hits),
        pairwise_accuracy=sum(rates) / len(rates) if rates else float("nan"),
        pairwise_interval=bootstrap_interval(rates, seed=1),
        sets=len(hits),
        ranking_accuracy_hpsv2=sum(ranking) / len(ranking) if ranking else None,
        ranking_hpsv2_interval=bootstrap_interval(ranking, seed=2) if ranking else None,
        ranked_sets=len(ranking),
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
            "ranking_accuracy_hpsv2": self.model.ranking_accuracy_hpsv2,
            "ranking_hpsv2_interval": _listed(self.model.ranking_hpsv2_interval),
            "sets": self.model.sets,
            "ranked_sets": self.model.ranked_sets,
            "model": self.model_name,
            "baseline": {
                "name": self.baseline_name,
                **{k: _listed(v) for k, v in asdict(self.baseline).items()},
            },
        }

    def markdown(self) -> str:
        """A short report table (with HPSv2's ranking accuracy when the sets carry ranks)."""
        ranked = self.model.ranking_accuracy_hpsv2 is not None
        header = "| model | top-1 accuracy (95% CI) | pairwise accuracy (95% CI) |"
        if ranked:
            header += " ranking accuracy, HPSv2 (95% CI) |"
        return "\n".join(
            [
                header + " sets |",
                "| --- " * (5 if ranked else 4) + "|",
                _row(self.model_name, self.model, ranked),
                _row(f"{self.baseline_name} (untuned start)", self.baseline, ranked),
            ]
        )


def _listed(value: Any) -> Any:
    """Tuples (intervals) as JSON lists; anything else as it is."""
    return list(value) if isinstance(value, tuple) else value


def _cell(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None or interval is None:
        return "–"
    return f"{value:.1%} ({interval[0]:.1%} – {interval[1]:.1%})"


def _row(name: str, m: Metrics, ranked: bool) -> str:
    cells = [
        name,
        _cell(m.top1_accuracy, m.top1_interval),
        _cell(m.pairwise_accuracy, m.pairwise_interval),
    ]
    if ranked:
        cells.append(_cell(m.ranking_accuracy_hpsv2, m.ranking_hpsv2_interval))
    return "| " + " | ".join([*cells, str(m.sets)]) + " |"


def write_report(comparison: Comparison, out_dir: Path) -> tuple[Path, Path]:
    """Write ``evaluation.json`` and ``evaluation.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    md_path = out_dir / "evaluation.md"
    json_path.write_text(json.dumps(comparison.as_dict(), indent=2))
    md_path.write_text("# Evaluation on held-out prompts\n\n" + comparison.markdown() + "\n")
    return json_path, md_path
