"""`hps benchmark` as a user runs it: the tiny pipeline end to end in a subprocess (JSON, table,
files, grid), a LoRA that changes the scores, and one-line errors."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TILE = 64  # the tiny pipeline's images
LABEL_HEIGHT = 14  # hps.diffusion.benchmark's, restated: the layout is what is tested

PROMPTS = "photo\ta photo of a red car\nanime\ta robot, anime\nphoto\ta photo of a dog\n"


def hps(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def split_output(stdout: str) -> tuple[dict[str, Any], list[str]]:
    """The summary JSON and the table's lines (printed after a blank line)."""
    document, table = stdout.split("\n\n", 1)
    return json.loads(document), table.strip().splitlines()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    folder = tmp_path_factory.mktemp("benchmark")
    (folder / "prompts.txt").write_text(PROMPTS, encoding="utf-8")
    result = hps(
        "benchmark",
        "--pipeline",
        "tiny",
        "--arch",
        "tiny",
        "--prompts",
        "prompts.txt",
        "--seeds",
        "2",
        "--inference-steps",
        "2",
        "--grid-columns",
        "3",
        "--save-images",
        "--device",
        "cpu",
        "--out",
        "out",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    return folder, result


def test_summary_json_and_table(run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, result = run
    summary, table = split_output(result.stdout)
    document = json.loads((folder / "out" / "benchmark.json").read_text())
    assert list(summary["styles"]) == ["photo", "anime"]
    assert summary["seeds"] == 2 and summary["images"] == 6
    assert summary["pipeline"] == "tiny" and summary["hps_model"]["arch"] == "tiny"
    assert Path(folder / summary["json"]) == folder / "out" / "benchmark.json"
    # Every number follows from the per-image scores written beside it.
    scores = document["scores"]
    assert [row["prompt"] for row in scores["photo"]] == [
        "a photo of a red car",
        "a photo of a dog",
    ]
    means = {}
    for style, rows in scores.items():
        flat = [score for row in rows for score in row["scores"]]
        assert all(len(row["scores"]) == 2 for row in rows)
        numbers = summary["styles"][style]
        assert numbers["images"] == len(flat) and numbers["prompts"] == len(rows)
        assert numbers["mean"] == pytest.approx(statistics.fmean(flat))
        assert numbers["std"] == pytest.approx(statistics.pstdev(flat))
        seed_means = [statistics.fmean(row["scores"][k] for row in rows) for k in range(2)]
        assert numbers["seed_std"] == pytest.approx(statistics.pstdev(seed_means))
        low, high = numbers["interval"]
        assert low <= numbers["mean"] <= high
        assert document["styles"][style] == numbers
        means[style] = numbers["mean"]
    assert summary["averaged"] == pytest.approx((means["photo"] + means["anime"]) / 2)
    assert table[0].split()[:5] == ["style", "prompts", "images", "mean", "std"]
    photo = table[2].split()
    assert photo[:4] == ["photo", "2", "4", f"{means['photo']:.2f}"]
    assert table[3].split()[:4] == ["anime", "1", "2", f"{means['anime']:.2f}"]
    assert table[4].split() == ["averaged", "3", "6", f"{summary['averaged']:.2f}"]
    assert (folder / "out" / "benchmark.txt").read_text().splitlines() == table
    assert "100%" in result.stderr  # the progress bar


def test_grid_png_layout_and_images(run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, _ = run
    out = folder / "out"
    assert (out / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out / "grid.png") as checked:
        checked.verify()
    with Image.open(out / "grid.png") as opened:
        grid = opened.convert("RGB")
    row = TILE + 2 * LABEL_HEIGHT
    assert grid.size == (3 * TILE, 2 * row)  # 3 columns, one row per style
    # photo: seed 0 of both prompts, then seed 1 of the first; anime: its two seeds.
    expected = {
        (0, 0): "photo/00000_0.png",
        (0, 1): "photo/00001_1000.png",
        (0, 2): "photo/00000_1.png",
        (1, 0): "anime/00000_0.png",
        (1, 1): "anime/00000_1.png",
    }
    pixels = np.asarray(grid)
    for (style_row, column), name in expected.items():
        top, left = style_row * row + LABEL_HEIGHT, column * TILE
        tile = pixels[top : top + TILE, left : left + TILE]
        with Image.open(out / "images" / name) as saved:
            assert np.array_equal(tile, np.asarray(saved.convert("RGB"))), name
    empty = pixels[row + LABEL_HEIGHT : row + LABEL_HEIGHT + TILE, 2 * TILE : 3 * TILE]
    assert (empty == 255).all()  # anime has two images only
    assert len(list((out / "images").rglob("*.png"))) == 6


def test_scores_are_the_hps_of_the_saved_images(
    run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    import torch

    from hps.scoring import build_scorer

    folder, _ = run
    document = json.loads((folder / "out" / "benchmark.json").read_text())
    torch.manual_seed(0)  # the command's random-init tiny HPS model
    scorer = build_scorer("tiny", device="cpu")
    dog = document["scores"]["photo"][1]
    images = [folder / "out" / "images" / "photo" / f"00001_{seed}.png" for seed in (1000, 1001)]
    assert scorer.score(dog["prompt"], images) == pytest.approx(dog["scores"], abs=1e-3)


def test_a_lora_is_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from hps.diffusion.pipelines import add_lora, build_tiny_pipeline, save_lora

    lora_pipe = build_tiny_pipeline(seed=0)
    add_lora(lora_pipe)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in lora_pipe.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # a LoRA that changes the UNet (B starts at zero)
    save_lora(lora_pipe, tmp_path / "lora")
    (tmp_path / "p.txt").write_text("a photo of a dog\n", encoding="utf-8")
    common = ["benchmark", "--pipeline", "tiny", "--arch", "tiny", "--prompts"]
    common += [str(tmp_path / "p.txt"), "--inference-steps", "2", "--device", "cpu"]

    def scores(*extra: str) -> list[float]:
        out = tmp_path / f"out{len(extra)}"
        assert main([*common, "--out", str(out), *extra]) == 0
        capsys.readouterr()
        document = json.loads((out / "benchmark.json").read_text())
        assert document["lora"] == (extra[1] if extra else None)
        assert list(document["styles"]) == ["all"]
        return [s for row in document["scores"]["all"] for s in row["scores"]]

    base = scores()
    adapted = scores("--lora", str(tmp_path / "lora"))
    assert base != pytest.approx(adapted, abs=1e-3)
    assert base == pytest.approx(scores(), abs=1e-5)  # the same seeds, the same images


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--prompts", "{bad}"], "not valid JSON (Expecting property name"),
        (["--prompts", "{empty}"], "style 'anime': no prompts (an empty style)"),
        (["--prompts", "{missing}"], "no such prompt file or folder"),
        (["--lora", "{folder}"], "no pytorch_lora_weights.safetensors in that folder"),
        (["--seeds", "0"], "seeds per prompt must be 1 to 1000, not 0"),
        (["--limit-per-style", "0"], "the limit per style must be at least 1, not 0"),
    ],
)
def test_errors_are_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    (tmp_path / "bad.json").write_text("{'photo': []}", encoding="utf-8")
    (tmp_path / "empty.json").write_text('{"photo": ["a dog"], "anime": []}', encoding="utf-8")
    (tmp_path / "good.txt").write_text("a dog\n", encoding="utf-8")
    names = {
        "bad": tmp_path / "bad.json",
        "empty": tmp_path / "empty.json",
        "missing": tmp_path / "nothing.json",
        "folder": tmp_path,
    }
    argv = ["benchmark", "--pipeline", "tiny", "--arch", "tiny", "--out", str(tmp_path / "o")]
    argv += [arg.format(**names) for arg in extra]
    if "--prompts" not in extra:
        argv += ["--prompts", str(tmp_path / "good.txt")]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("hps benchmark: error: ")
    assert fragment in errors[0]
    assert not (tmp_path / "o").exists()


def test_a_model_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.txt").write_text("a dog\n", encoding="utf-8")
    argv = ["benchmark", "--pipeline", "tiny", "--prompts", str(tmp_path / "good.txt")]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "give --arch, --checkpoint, or both" in capsys.readouterr().err
