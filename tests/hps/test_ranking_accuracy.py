"""HPSv2's ranking accuracy (``ranking_accuracy_hpsv2``) on hand-computed cases.

HPSv2's definition (its reference evaluation): the model's ranking of a set is the argsort of
its scores, highest first (equal scores keep image order); per set the accuracy is 1 - inverted
pairs / all pairs, where a pair is inverted when the model and the human ranks order it in
opposite ways (a pair tied in the human ranks never is); the result is the mean over sets.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hps.evaluation import (
    Comparison,
    evaluate,
    hpsv2_ranking_rates,
    metrics_of,
    model_ranks,
    pairwise_rates,
    write_report,
)
from hps.training.manifests import PreferenceSet, load_manifest
from worker.report import plot_comparison


def ranked(*ranks: int) -> PreferenceSet:
    best = min(ranks)
    target = tuple(1.0 if r == best else 0.0 for r in ranks)
    return PreferenceSet("p", tuple(f"{i}.png" for i in range(len(ranks))), target, ranks=ranks)


def pick(chosen: int, size: int = 4) -> PreferenceSet:
    target = tuple(1.0 if i == chosen else 0.0 for i in range(size))
    return PreferenceSet("p", tuple(f"{i}.png" for i in range(size)), target)


def test_model_ranks_are_positions_with_ties_in_image_order() -> None:
    assert model_ranks([1.0, 4.0, 3.0, 2.0]) == [3, 0, 1, 2]
    assert model_ranks([2.0, 2.0, 5.0, 2.0]) == [1, 2, 0, 3]


def test_equals_pairwise_accuracy_without_ties() -> None:
    # human order 1 > 3 > 0 > 2; model order 0 > 1 > 3 > 2: 2 of the 6 pairs inverted.
    assert hpsv2_ranking_rates([[9.0, 8.0, 1.0, 2.0]], [ranked(3, 1, 4, 2)]) == [
        pytest.approx(4 / 6)
    ]
    rng = random.Random(7)
    for _ in range(200):
        size = rng.randrange(2, 9)
        ranks = tuple(rng.sample(range(1, size + 1), size))
        scores = rng.sample(range(1000), size)  # distinct: no model ties
        sets, grouped = [ranked(*ranks)], [[float(s) for s in scores]]
        assert hpsv2_ranking_rates(grouped, sets) == pytest.approx(pairwise_rates(grouped, sets))


def test_pairs_tied_in_human_ranks_count_as_not_inverted() -> None:
    # Human ranks 1, 2, 2, 3; the model ranks the images 3, 0, 1, 2 (positions).
    # Pairs: (0,1) (0,2) (0,3) inverted; (1,2) human tie: not inverted; (1,3) (2,3) agree.
    sets, scores = [ranked(1, 2, 2, 3)], [[1.0, 4.0, 3.0, 2.0]]
    assert hpsv2_ranking_rates(scores, sets) == [pytest.approx(1 - 3 / 6)]
    # The pairwise metric leaves the tied pair out: 2 of 5 known pairs agree.
    assert pairwise_rates(scores, sets) == [pytest.approx(2 / 5)]
    # A set tied all through is never inverted: 1.0 (pairwise has no pair to count).
    assert hpsv2_ranking_rates([[3.0, 1.0, 2.0]], [ranked(1, 1, 1)]) == [1.0]
    assert pairwise_rates([[3.0, 1.0, 2.0]], [ranked(1, 1, 1)]) == []


def test_equal_model_scores_rank_the_earlier_image_first() -> None:
    # HPSv2 ranks by argsort: equal scores do not tie, the earlier image comes first.
    assert hpsv2_ranking_rates([[5.0, 5.0]], [ranked(2, 1)]) == [0.0]
    assert hpsv2_ranking_rates([[5.0, 5.0]], [ranked(1, 2)]) == [1.0]
    assert pairwise_rates([[5.0, 5.0]], [ranked(2, 1)]) == [0.5]  # the other metric: one half
    # Three equal scores: model order 0 > 1 > 2; human order 2 > 1 > 0 inverts all 3 pairs,
    # human ranks (2, 1, 1) invert (0,1) and (0,2) but not the tied (1,2).
    assert hpsv2_ranking_rates([[1.0, 1.0, 1.0]], [ranked(3, 2, 1)]) == [0.0]
    assert hpsv2_ranking_rates([[1.0, 1.0, 1.0]], [ranked(2, 1, 1)]) == [pytest.approx(1 / 3)]


def test_metrics_average_over_ranked_sets_only() -> None:
    sets = [ranked(1, 2, 2, 3), ranked(3, 1, 4, 2), pick(0)]
    scores = [[1.0, 4.0, 3.0, 2.0], [9.0, 8.0, 1.0, 2.0], [0.0, 1.0, 0.0, 0.0]]
    metrics = metrics_of(scores, sets)
    assert metrics.ranked_sets == 2
    assert metrics.ranking_accuracy_hpsv2 == pytest.approx((0.5 + 4 / 6) / 2)
    assert metrics.pairwise_accuracy == pytest.approx((2 / 5 + 4 / 6 + 1 / 3) / 3)
    assert metrics.ranking_hpsv2_interval is not None
    low, high = metrics.ranking_hpsv2_interval
    assert 0.5 - 1e-9 <= low <= high <= 4 / 6 + 1e-9
    unranked = metrics_of([[0.0, 1.0, 0.0, 0.0]], [pick(1)])
    assert unranked.ranking_accuracy_hpsv2 is None and unranked.ranked_sets == 0


class FixedScorer:
    """Scores an image by the number in its file name's table."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table

    def score(
        self, prompts: str | Sequence[str], images: Sequence[Any], *, batch_size: int = 32
    ) -> list[float]:
        return [self.table[Path(str(image)).name] for image in images]


def test_hpd_v2_test_file_ranks_reach_the_metric_and_the_reports(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "a",
            "image_path": ["a0.png", "a1.png", "a2.png", "a3.png"],
            "rank": [1, 2, 2, 3],
        },
        {
            "prompt": "b",
            "image_path": ["b0.png", "b1.png", "b2.png", "b3.png"],
            "rank": [3, 1, 4, 2],
        },
    ]
    (tmp_path / "test.json").write_text(json.dumps(rows))
    sets = load_manifest(tmp_path / "test.json")
    table = {"a0.png": 1.0, "a1.png": 4.0, "a2.png": 3.0, "a3.png": 2.0}
    table |= {"b0.png": 9.0, "b1.png": 8.0, "b2.png": 1.0, "b3.png": 2.0}
    model = evaluate(FixedScorer(table), sets)
    baseline = evaluate(FixedScorer(dict.fromkeys(table, 0.0)), sets)
    expected = (0.5 + 4 / 6) / 2
    assert model.ranking_accuracy_hpsv2 == pytest.approx(expected)
    assert model.pairwise_accuracy == pytest.approx((2 / 5 + 4 / 6) / 2)
    # All scores equal: the model order is the file's order.
    # a: (0,1) (0,2) (0,3) (1,3) (2,3) agree, (1,2) tied -> 1.0;
    # b: order 0 > 1 > 2 > 3 vs human 1 > 3 > 0 > 2: (0,1) (0,3) (2,3) inverted -> 0.5.
    assert baseline.ranking_accuracy_hpsv2 == pytest.approx(0.75)

    json_path, md_path = write_report(Comparison(model, baseline, "m", "clip"), tmp_path / "r")
    document = json.loads(json_path.read_text())
    assert document["ranking_accuracy_hpsv2"] == pytest.approx(expected)
    assert document["ranked_sets"] == 2 and len(document["ranking_hpsv2_interval"]) == 2
    assert document["baseline"]["ranking_accuracy_hpsv2"] == pytest.approx(0.75)
    assert "ranking accuracy, HPSv2" in md_path.read_text()
    assert "| clip (untuned start) | " in md_path.read_text()
    png = plot_comparison(model, baseline, tmp_path / "r" / "evaluation.png", baseline_name="b")
    assert png.stat().st_size > 0


def test_reports_without_ranked_sets_say_nothing_of_hpsv2(tmp_path: Path) -> None:
    sets = [pick(0), pick(1)]
    model = metrics_of([[2.0, 1.0, 0.0, 0.0], [0.0, 3.0, 1.0, 1.0]], sets)
    json_path, md_path = write_report(Comparison(model, model, "m", "clip"), tmp_path)
    document = json.loads(json_path.read_text())
    assert document["ranking_accuracy_hpsv2"] is None and document["ranked_sets"] == 0
    assert document["baseline"]["ranking_hpsv2_interval"] is None
    assert "HPSv2" not in md_path.read_text()
    assert plot_comparison(model, model, tmp_path / "e.png", baseline_name="b").is_file()
