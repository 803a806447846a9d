"""The adapt job's report as the channel gets it: base vs adapted mean HPS with intervals and
the win rate in the text, the side-by-side grid attached from the store, within Discord's
limits (2,000 characters, the upload size), pinging nobody."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
from PIL import Image

from bot.formatting import render_result
from db.outbox import OutboxKind
from jobqueue.contracts import AdaptReport
from media.store import LocalImageStore
from sandbox.discord_rules import check_message_body
from sandbox.emulator import ATTACHMENT_SIZE_LIMIT
from worker.tasks.adaptation import (
    GRID_FILENAME,
    MAX_GRID_BYTES,
    fit_png,
    posted_grid,
    report_text,
)

EVALUATION = {
    "base_mean": -3.25,
    "base_interval": [-3.5, -3.0],
    "base_negative_mean": -3.2,
    "base_negative_interval": [-3.45, -2.95],
    "adapted_mean": -2.5,
    "adapted_interval": [-2.75, -2.25],
    "win_rate": 0.8125,
    "win_rate_vs_base_negative": 0.75,
    "pairs": 96,
    "grid_png": "",
    "negative_prompt": "Weird image. ",
}


def report(grid: Path, store: LocalImageStore, **extra: Any) -> AdaptReport:
    context = cast(Any, SimpleNamespace(runtime=SimpleNamespace(store=store)))
    fields: dict[str, Any] = {  # the adaptation's metadata rides along as extra fields
        "source_note": "harvested (40 harvested prompts with 4+ images)",
        "evaluation": {**EVALUATION, "grid_png": str(grid)},
        "eval_prompts": 12,
        **extra,
    }
    made = AdaptReport(
        name="lora-1234abcd",
        source="harvested",
        files=posted_grid(context, grid),
        **fields,
    )
    return made.model_copy(update={"text": report_text(made)})


def noise_png(path: Path, side: int) -> Path:
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_the_report_posts_the_numbers_and_the_grid(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "store")
    grid = noise_png(tmp_path / "adaptation_grid.png", 64)
    made = report(grid, store, model_version_id=7)
    assert (
        "On 12 held-out prompts (96 images per arm, the same seeds), mean HPS: "
        "base -3.25 [-3.50, -3.00], adapted -2.50 [-2.75, -2.25] (95% intervals); "
        "the adapted image wins 81% of pairs." in made.text
    )
    assert "adapted wins 75% against it" in made.text and "/hps admin promote 7" in made.text
    # The outbox keeps the result's JSON; the bot posts its text and the grid from the store.
    payload = {**made.model_dump(mode="json"), "requested_by": None}
    post = render_result(OutboxKind.adapt_report, payload, store)
    assert post.content == made.text
    assert [f.filename for f in post.files] == [GRID_FILENAME]
    assert post.files[0].fp.read() == grid.read_bytes()
    assert post.allowed_mentions.users is False and post.allowed_mentions.everyone is False
    assert post.allowed_mentions.roles is False


def test_the_post_stays_within_discords_limits(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "store")
    # A full-size pipeline's grid of noise: far over the upload limit as it was written.
    grid = noise_png(tmp_path / "adaptation_grid.png", 2200)
    assert grid.stat().st_size > MAX_GRID_BYTES
    made = report(grid, store, source_note="@everyone <@123456789012345678> " + "x" * 3000)
    payload = {**made.model_dump(mode="json"), "requested_by": 42}
    post = render_result(OutboxKind.adapt_report, payload, store)
    files = [(f.filename, f.fp.read(), "image/png") for f in post.files]
    assert files[0][0] == GRID_FILENAME and len(files[0][1]) <= MAX_GRID_BYTES
    shrunk = Image.open(io.BytesIO(files[0][1]))
    assert shrunk.width < 2200
    # What Discord (the emulator's rules) accepts: the length, file count and upload size.
    body = {"content": post.content, "allowed_mentions": post.allowed_mentions.to_dict()}
    check_message_body(body, files, upload_limit=ATTACHMENT_SIZE_LIMIT)
    assert len(post.content) <= 2000
    assert "@everyone" not in post.content and "<@123456789012345678>" not in post.content
    assert [u.id for u in cast(list[Any], post.allowed_mentions.users)] == [42]  # requester


def test_fit_png_keeps_a_small_grid_as_it_is(tmp_path: Path) -> None:
    grid = noise_png(tmp_path / "g.png", 40)
    assert fit_png(grid) == grid.read_bytes()
    assert len(fit_png(grid, limit=1000)) <= 1000


def test_a_report_without_an_evaluation_still_reads(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "store")
    made = AdaptReport(name="lora-x", source="generated", source_note="generated, as asked")
    assert report_text(made) == "Adapted lora-x (generated, as asked)."
    context = cast(Any, SimpleNamespace(runtime=SimpleNamespace(store=store)))
    assert posted_grid(context, tmp_path / "missing.png") == []
