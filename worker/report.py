"""The evaluation report picture posted with a training result."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_comparison(candidate: Any, baseline: Any, png_path: Path, *, baseline_name: str) -> Path:
    """Top-1 and pairwise accuracy of the candidate beside the baseline, with 95% intervals
    (and HPSv2's ranking accuracy when the held-out sets carry human ranks)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        ("top-1", "top1_accuracy", "top1_interval"),
        ("pairwise", "pairwise_accuracy", "pairwise_interval"),
    ]
    if all(getattr(m, "ranking_accuracy_hpsv2", None) is not None for m in (candidate, baseline)):
        metrics.append(("ranking (HPSv2)", "ranking_accuracy_hpsv2", "ranking_hpsv2_interval"))
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
    width = 0.38
    for offset, (label, result, color) in enumerate(
        ((f"{baseline_name} (current)", baseline, "tab:gray"), ("candidate", candidate, "tab:blue"))
    ):
        values = [getattr(result, name) for _, name, _ in metrics]
        lows = [
            value - getattr(result, interval)[0]
            for (_, _, interval), value in zip(metrics, values, strict=True)
        ]
        highs = [
            getattr(result, interval)[1] - value
            for (_, _, interval), value in zip(metrics, values, strict=True)
        ]
        positions = [index + (offset - 0.5) * width for index in range(len(metrics))]
        axis.bar(positions, values, width, yerr=[lows, highs], capsize=4, color=color, label=label)
    axis.set_xticks(range(len(metrics)), [label for label, _, _ in metrics])
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"accuracy on {candidate.sets} held-out choices")
    axis.legend(loc="lower right")
    axis.set_title("HPS candidate vs current model")
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path)
    plt.close(figure)
    return png_path
