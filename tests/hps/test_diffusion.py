"""Stable Diffusion on the tiny pipeline: seeded generation, the selection rule, LoRA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hps.diffusion.lora_training import Example, LoraConfig, train_lora
from hps.diffusion.pipelines import (
    PipelineError,
    build_tiny_pipeline,
    generate,
    open_pipeline,
    save_lora,
    unload_loras,
    use_lora,
)
from hps.diffusion.selection import Selection, is_blurry, select_examples, sharpness


def pixels(generated: list) -> list[np.ndarray]:  # type: ignore[type-arg]
    return [np.asarray(g.image) for g in generated]


@pytest.fixture(scope="module")
def pipe():  # type: ignore[no-untyped-def]
    return build_tiny_pipeline(seed=0)


def test_same_seed_same_image(pipe) -> None:  # type: ignore[no-untyped-def]
    first = generate(pipe, "a red fox", [11, 12, 13], steps=4)
    again = generate(pipe, "a red fox", [11, 12, 13], steps=4)
    assert all(np.array_equal(a, b) for a, b in zip(pixels(first), pixels(again), strict=True))
    assert not np.array_equal(pixels(first)[0], pixels(first)[1])
    assert [g.seed for g in first] == [11, 12, 13]
    # Batched differently, the same seed gives the same picture up to float rounding.
    single = generate(pipe, "a red fox", [13, 11], steps=4, batch_size=1)
    for a, b in ((pixels(first)[2], pixels(single)[0]), (pixels(first)[0], pixels(single)[1])):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


@pytest.mark.parametrize(
    ("scores", "alpha", "expected"),
    [
        ([10.0, 0.0, 0.0, 0.0], 2.0, Selection(0, None)),  # one clear winner, no clear loser
        ([3.0, 0.0, 0.0, -3.0], 2.0, Selection(0, 3)),  # p(top) = e^3/(e^3+2+e^-3) = 0.907 > 0.5
        ([1.0, 1.0, 1.0, 1.0], 2.0, Selection(None, None)),  # all 0.25
        ([20.0, 20.0, 0.0, 0.0], 2.0, Selection(None, None)),  # 0.5 is not > 2/4
        ([0.8, 0.0, 0.0, 0.0], 2.0, Selection(None, None)),  # e^.6/(e^.6+3e^-.2) = 0.43; 0.29
        ([0.0, 0.0, 0.0, -10.0], 2.0, Selection(None, 3)),  # three tied at 1/3; a clear loser
        ([3.0, 0.0, 0.0, -3.0], 3.6, Selection(0, 3)),  # 0.907 > 0.9
        ([3.0, 0.0, 0.0, -3.0], 3.7, Selection(None, None)),  # 0.907 < 0.925
        ([9.0, 0.0, 0.0], 2.0, Selection(None, None)),  # fewer than 4 images
    ],
)
def test_selection_rule(scores: list[float], alpha: float, expected: Selection) -> None:
    assert select_examples(scores, alpha) == expected


def test_blur_filter() -> None:
    from PIL import Image, ImageFilter

    sharp = Image.effect_noise((64, 64), 80).convert("RGB")
    blurred = sharp.filter(ImageFilter.GaussianBlur(4))
    assert sharpness(sharp) > 10 * sharpness(blurred)
    assert is_blurry(blurred, threshold=sharpness(sharp) / 2)
    assert not is_blurry(blurred, threshold=0)


def unet_output(pipe) -> torch.Tensor:  # type: ignore[no-untyped-def]
    torch.manual_seed(123)
    sample = torch.randn(1, 4, 32, 32)
    context = torch.randn(1, 77, 32)
    with torch.no_grad():
        return pipe.unet(sample, torch.tensor([500]), context).sample


def test_lora_changes_outputs_saves_loads_and_unloads(tmp_path: Path) -> None:
    trained = build_tiny_pipeline(seed=0)
    base = unet_output(trained)
    examples = [
        Example(g.image, "a red fox") for g in generate(trained, "a red fox", [1, 2], steps=2)
    ]
    losses = train_lora(trained, examples, LoraConfig(steps=6, lr=1e-2, batch_size=2))
    assert len(losses) == 6 and all(np.isfinite(losses))
    after = unet_output(trained)
    assert not torch.allclose(after, base)
    save_lora(trained, tmp_path / "lora")

    fresh = build_tiny_pipeline(seed=0)
    assert torch.equal(unet_output(fresh), base)
    use_lora(fresh, tmp_path / "lora", "v1")
    assert torch.allclose(unet_output(fresh), after, atol=1e-6)
    unload_loras(fresh)
    assert torch.allclose(unet_output(fresh), base, atol=1e-6)


def test_hps_adapt_command(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "train.txt").write_text("\n".join(f"a scene {i}" for i in range(4)) + "\n")
    (tmp_path / "eval.txt").write_text("a cat\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "adapt",
            "--pipeline",
            "tiny",
            "--arch",
            "tiny",
            "--prompts",
            str(tmp_path / "train.txt"),
            "--eval-prompts",
            str(tmp_path / "eval.txt"),
            "--out",
            str(tmp_path / "out"),
            "--images-per-prompt",
            "4",
            "--inference-steps",
            "2",
            "--lora-steps",
            "3",
            "--lr",
            "1e-3",
            "--batch-size",
            "2",
            "--device",
            "cpu",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert (Path(summary["lora_dir"]) / "pytorch_lora_weights.safetensors").is_file()
    assert (Path(summary["lora_dir"]) / "hps_lora.json").is_file()
    assert summary["selection"]["generated"] == 16
    assert Path(summary["evaluation"]["grid_png"]).is_file()
    assert summary["source"] == "generated"  # the default --source
    assert {"base_negative_mean", "win_rate_vs_base_negative"} <= set(summary["evaluation"])


def test_local_pipeline_folder_loads_offline_and_errors_are_clear(tmp_path: Path) -> None:
    from hps.diffusion.pipelines import PipelineError, load_pipeline

    original = build_tiny_pipeline(seed=3)
    original.save_pretrained(tmp_path / "sd")
    loaded = load_pipeline(tmp_path / "sd")
    a = generate(original, "a boat", [5], steps=2)[0]
    b = generate(loaded, "a boat", [5], steps=2)[0]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    with pytest.raises(PipelineError, match="no such diffusers folder or checkpoint"):
        load_pipeline(tmp_path / "absent")
    (tmp_path / "broken").mkdir()
    with pytest.raises(PipelineError, match="cannot load a Stable Diffusion pipeline"):
        load_pipeline(tmp_path / "broken")


def test_regularisation_folder(tmp_path: Path) -> None:
    from PIL import Image

    from hps.diffusion.adapt import regularization_examples

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a plain photo\n")
    [example] = regularization_examples(tmp_path)
    assert example.caption == "a plain photo" and example.image.size == (8, 8)
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png: regularisation image without b\.txt"):
        regularization_examples(tmp_path)


def test_open_pipeline_builds_tiny_in_code() -> None:
    opened = open_pipeline("tiny", "cpu", seed=3)
    built = build_tiny_pipeline(seed=3)
    assert opened.device.type == "cpu" and opened.unet.dtype == torch.float32
    weights = zip(opened.unet.state_dict().values(), built.unet.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in weights)


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        ("cpu", torch.float32),
        pytest.param(
            "cuda",
            torch.float16,
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"),
        ),
    ],
)
def test_open_pipeline_loads_a_folder_in_float16_on_cuda_only(
    tmp_path: Path, device: str, dtype: torch.dtype
) -> None:
    build_tiny_pipeline(seed=1).save_pretrained(tmp_path / "sd")
    opened = open_pipeline(tmp_path / "sd", device)
    assert opened.device.type == device
    assert opened.unet.dtype == dtype and opened.vae.dtype == dtype
    with pytest.raises(PipelineError, match="no such diffusers folder"):
        open_pipeline(tmp_path / "absent", device)
