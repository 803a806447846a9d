"""A compiled image tower (SCORE_COMPILE, bench.score --compile) scores as the eager one, and
keeps one batch shape: a short last batch is padded, so nothing recompiles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from PIL import Image

from hps.scoring import COMPILE_MODES, build_scorer

if TYPE_CHECKING:
    from config import Settings


def _images(count: int) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(3)
    return [
        Image.fromarray((torch.rand(50 + 7 * i, 64, 3, generator=generator) * 255).byte().numpy())
        for i in range(count)
    ]


def test_padding_a_short_batch_changes_no_score() -> None:
    scorer = build_scorer("tiny", device="cpu", dtype="float32")
    pixels = torch.stack([scorer.pixels(image) for image in _images(3)])
    plain = scorer.encode_pixels(pixels)
    padded = scorer.encode_pixels(pixels, pad_to=8)
    assert padded.shape == plain.shape == (3, plain.shape[1])
    assert torch.allclose(plain, padded, atol=1e-5)


def test_a_compiled_tower_scores_as_the_eager_one_with_one_graph() -> None:
    from torch._dynamo.utils import counters

    images = _images(7)  # batches of 4: the last one has 3 and is padded
    prompts = [f"a picture number {i}" for i in range(len(images))]
    eager = build_scorer("tiny", device="cpu", dtype="float32")
    expected = eager.score(prompts, images, batch_size=4)

    torch._dynamo.reset()
    counters.clear()
    compiled = build_scorer("tiny", device="cpu", dtype="float32", compile_mode="default")
    compiled.model.load_state_dict(eager.model.state_dict())
    assert compiled.score(prompts, images, batch_size=4) == pytest.approx(expected, abs=1e-3)
    assert compiled.score(prompts[:2], images[:2], batch_size=4) == pytest.approx(
        expected[:2], abs=1e-3
    )
    assert counters["stats"]["unique_graphs"] == 1  # one shape: no recompiling for short batches


def test_an_unknown_compile_mode_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="compile mode must be one of") as caught:
        build_scorer("tiny", device="cpu", dtype="float32", compile_mode="fastest")
    assert all(mode in str(caught.value) for mode in COMPILE_MODES)


def test_the_workers_scorers_take_score_compile(tmp_path: Path) -> None:
    from config import SettingsError, load_settings
    from worker.runtime import Runtime

    def settings(**values: str) -> Settings:
        return load_settings(hps_data_dir=tmp_path, worker_device="cpu", **values)

    assert Runtime(settings()).models.compile_mode is None
    assert Runtime(settings(score_compile="reduce-overhead")).models.compile_mode == (
        "reduce-overhead"
    )
    with pytest.raises(SettingsError, match="SCORE_COMPILE"):
        settings(score_compile="fastest")
