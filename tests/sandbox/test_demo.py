"""The offline demo end to end (emulator + simulated community + the real bot, a worker
process, embedded SQLite database and broker), and the community's hidden preferences."""

from __future__ import annotations

import random
import re
from pathlib import Path

from sandbox.community import Candidate, Member, draw_candidate
from sandbox.demo import run_demo


def test_members_prefer_what_their_hidden_taste_says() -> None:
    rng = random.Random(0)
    warm_fan, contrarian = Member(1, "a"), Member(2, "b", likes_warm=False)
    hot = Candidate(draw_candidate(rng).image, warmth=1.0, disc_size=1.0)
    cold = Candidate(draw_candidate(rng).image, warmth=-1.0, disc_size=1.0)
    picks = [warm_fan.pick([cold, hot], rng) for _ in range(200)]
    assert picks.count(1) > 190  # choosy, not deterministic
    assert sum(contrarian.pick([cold, hot], rng) == 0 for _ in range(200)) > 190


def test_offline_demo_harvests_trains_scores_and_regenerates(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = run_demo(tmp_path / "demo", generations=120, say=lines.append)
    assert (summary.generations, summary.images, summary.choices) == (120, 480, 120)
    # Trained on the community's picks and compared with the untuned start.
    match = re.search(
        r"top-1 on \d+ held-out prompts' choices ([\d.]+)% vs ([\d.]+)%", summary.train_report
    )
    assert match, summary.train_report
    trained, untuned = float(match.group(1)), float(match.group(2))
    assert trained > untuned + 10  # the community's hidden taste was learnt from its picks
    assert "promoted by force" in summary.train_report
    assert re.search(r"HPS -?[\d.]+ .* model hps-", summary.score_reply), summary.score_reply
    assert "regenerated (best of 4): HPS" in summary.regenerate_reply
    assert summary.files_posted >= 2  # the evaluation plot (+ curve) and the regenerated image
    assert lines[-6] == "demo: summary" and lines[-5].startswith("  harvested: 120 generations")
    assert (tmp_path / "demo" / "hps.sqlite3").is_file()
