"""The style benchmark (hps.diffusion.benchmark): prompt files and their errors, the statistics
against hand-computed numbers, generation and scoring on the tiny pipeline, the grid."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hps.diffusion.benchmark import (
    LABEL_HEIGHT,
    MIN_TILE,
    SEED_STRIDE,
    BenchmarkError,
    BenchmarkSettings,
    Example,
    StyleResult,
    averaged,
    benchmark_document,
    draw_grid,
    format_table,
    limit_styles,
    prompt_seeds,
    read_style_prompts,
    run_benchmark,
    summarise_style,
    summary_dict,
)

# -- prompt files -------------------------------------------------------------------------------


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_json_object_of_styles(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.json",
        json.dumps({"photo": ["a dog", " a cat "], "anime": ["a robot"]}),
    )
    assert read_style_prompts(path) == {"photo": ["a dog", "a cat"], "anime": ["a robot"]}


def test_one_style_file_is_named_after_it(tmp_path: Path) -> None:
    path = write(tmp_path / "concept-art.json", json.dumps(["a castle", "a ship"]))
    assert read_style_prompts(path) == {"concept-art": ["a castle", "a ship"]}


def test_folder_of_style_files_as_hpsv2_ships_them(tmp_path: Path) -> None:
    folder = tmp_path / "benchmark"
    folder.mkdir()
    write(folder / "photo.json", json.dumps(["a dog"]))
    write(folder / "anime.json", json.dumps(["a robot", "a girl"]))
    write(folder / "README.txt", "not a style")
    assert read_style_prompts(folder) == {"anime": ["a robot", "a girl"], "photo": ["a dog"]}


def test_text_file_with_styles(tmp_path: Path) -> None:
    path = write(
        tmp_path / "p.txt",
        "photo\ta dog\n\nanime\ta robot\r\nphoto\t a cat, at night \n",
    )
    assert read_style_prompts(path) == {"photo": ["a dog", "a cat, at night"], "anime": ["a robot"]}


def test_text_file_without_styles_is_one_style_all(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", "a dog\n  \na cat\n")
    assert read_style_prompts(path) == {"all": ["a dog", "a cat"]}


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.json", '{"photo": ["a dog",]}', "not valid JSON (Expecting value at line 1 column"),
        ("num.json", "42", "expected an object {style: [prompts]} or a list of prompts, got int"),
        ("str.json", '{"photo": "a dog"}', "style 'photo': expected a list of prompts, got str"),
        ("empty.json", '{"photo": ["a dog"], "anime": []}', "style 'anime': no prompts"),
        ("types.json", '{"photo": ["a dog", 3]}', "style 'photo': prompt 2 is int, not a string"),
        ("blank.json", '{"photo": ["a dog", "  "]}', "style 'photo': prompt 2 is empty"),
        ("name.json", '{" ": ["a dog"]}', "a style has an empty name"),
        ("none.json", "{}", "no styles"),
        ("emptylist.json", "[]", "no prompts (an empty style)"),
        ("mixed.txt", "photo\ta dog\na cat\n", "line 2 has no style (style<TAB>prompt) but line 1"),
        ("nostyle.txt", "a dog\n\ta cat\n", "p:2: empty style before the tab"),
        ("noprompt.txt", "photo\ta dog\nanime\t  \n", "p:2: no prompt after the style 'anime'"),
        ("blank.txt", "\n  \n", "no styles"),
        ("latin1.txt", "caf\xe9\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_malformed_prompt_files_are_refused_clearly(
    tmp_path: Path, name: str, content: str | bytes, fragment: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(BenchmarkError) as error:
        read_style_prompts(path)
    message = str(error.value).replace(str(tmp_path / name), "p")
    assert fragment in message
    assert str(path) in str(error.value) or fragment == "no styles"


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="no such prompt file or folder"):
        read_style_prompts(tmp_path / "missing.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchmarkError, match=r"no <style>\.json files in this folder"):
        read_style_prompts(empty)
    write(empty / "photo.json", json.dumps({"photo": ["a dog"]}))
    with pytest.raises(BenchmarkError, match="a style file holds a JSON list of prompts, got dict"):
        read_style_prompts(empty)


def test_limit_per_style() -> None:
    styles = {"a": ["1", "2", "3"], "b": ["4"]}
    assert limit_styles(styles, 2) == {"a": ["1", "2"], "b": ["4"]}
    assert limit_styles(styles, None) == styles
    with pytest.raises(BenchmarkError, match="at least 1, not 0"):
        limit_styles(styles, 0)


def test_settings_are_checked() -> None:
    with pytest.raises(BenchmarkError, match="seeds per prompt must be 1 to 1000, not 0"):
        BenchmarkSettings(seeds=0)
    with pytest.raises(BenchmarkError, match="seeds per prompt must be 1 to 1000, not 1001"):
        BenchmarkSettings(seeds=SEED_STRIDE + 1)
    with pytest.raises(BenchmarkError, match="inference_steps must be at least 1, not 0"):
        BenchmarkSettings(inference_steps=0)
    with pytest.raises(BenchmarkError, match="first seed must be 0 or more"):
        BenchmarkSettings(first_seed=-1)


def test_seeds_of_a_prompt_do_not_move_with_more_seeds() -> None:
    assert prompt_seeds(0, BenchmarkSettings(seeds=2)) == [0, 1]
    assert prompt_seeds(3, BenchmarkSettings(seeds=2, first_seed=7)) == [3007, 3008]
    assert prompt_seeds(3, BenchmarkSettings(seeds=3, first_seed=7))[:2] == [3007, 3008]


# -- statistics against hand-computed numbers ---------------------------------------------------


def test_summary_of_a_style_by_hand() -> None:
    # Two prompts x two seeds: images 1, 3 (prompt 0) and 5, 7 (prompt 1).
    summary = summarise_style("photo", [[1.0, 3.0], [5.0, 7.0]])
    assert (summary.prompts, summary.images) == (2, 4)
    assert summary.mean == 4.0
    assert summary.std == pytest.approx(math.sqrt(5.0))  # (9 + 1 + 1 + 9) / 4 = 5
    assert summary.seed_std == pytest.approx(1.0)  # seed means 3 and 5
    low, high = summary.interval  # bootstrap over the prompt means 2 and 6
    assert 2.0 <= low < 4.0 < high <= 6.0
    assert summary.as_dict()["interval"] == [low, high]


def test_summary_with_one_seed_has_no_seed_spread() -> None:
    summary = summarise_style("anime", [[2.0], [4.0], [9.0]])
    assert summary.mean == 5.0
    assert summary.std == pytest.approx(math.sqrt((9 + 1 + 16) / 3))
    assert summary.seed_std is None
    one = summarise_style("anime", [[2.5]])
    assert one.interval == (2.5, 2.5) and one.std == 0.0


def test_summary_refuses_ragged_or_empty_scores() -> None:
    with pytest.raises(BenchmarkError, match="same number of scores"):
        summarise_style("photo", [[1.0, 2.0], [3.0]])
    with pytest.raises(BenchmarkError, match="no scores"):
        summarise_style("photo", [])


def test_averaged_weighs_every_style_the_same() -> None:
    # Style means 4 (4 images) and 10 (1 image): averaged 7, not the image mean 5.2.
    summaries = [summarise_style("a", [[1.0, 3.0], [5.0, 7.0]]), summarise_style("b", [[10.0]])]
    assert averaged(summaries) == 7.0
    summary = summary_dict(summaries)
    assert summary["averaged"] == 7.0 and summary["images"] == 5
    assert summary["styles"]["b"] == {
        "prompts": 1,
        "images": 1,
        "mean": 10.0,
        "std": 0.0,
        "seed_std": None,
        "interval": [10.0, 10.0],
    }


def test_table_rows() -> None:
    summaries = [
        summarise_style("photo", [[1.0, 3.0], [5.0, 7.0]]),
        summarise_style("anime", [[10.0]]),
    ]
    lines = format_table(summaries).splitlines()
    assert lines[0].split()[:5] == ["style", "prompts", "images", "mean", "std"]
    assert lines[2].split()[:6] == ["photo", "2", "4", "4.00", "2.24", "1.00"]
    assert lines[3].split() == ["anime", "1", "1", "10.00", "0.00", "-", "[10.00,", "10.00]"]
    assert lines[4].split() == ["averaged", "3", "5", "7.00"]


# -- generation and scoring on the tiny pipeline -----------------------------------------------


@pytest.fixture(scope="module")
def pipe() -> Any:
    from hps.diffusion.pipelines import build_tiny_pipeline

    return build_tiny_pipeline(seed=0)


@pytest.fixture(scope="module")
def scorer() -> Any:
    import torch

    from hps.scoring import build_scorer

    torch.manual_seed(0)
    return build_scorer("tiny", device="cpu")


def test_run_generates_the_seeds_and_scores_each_image_for_its_prompt(
    pipe: Any, scorer: Any
) -> None:
    from hps.diffusion.pipelines import generate

    styles = {"photo": ["a red car", "a dog"], "anime": ["a robot"]}
    settings = BenchmarkSettings(seeds=2, first_seed=5, inference_steps=2, grid_columns=3)
    progress: list[tuple[str, int]] = []
    saved: list[tuple[str, int, int]] = []
    results = run_benchmark(
        pipe,
        scorer,
        styles,
        settings,
        on_images=lambda style, n: progress.append((style, n)),
        save_image=lambda style, index, g: saved.append((style, index, g.seed)),
    )
    assert [r.style for r in results] == ["photo", "anime"]
    assert progress == [("photo", 2), ("photo", 2), ("anime", 2)]
    assert saved == [
        ("photo", 0, 5),
        ("photo", 0, 6),
        ("photo", 1, 1005),
        ("photo", 1, 1006),
        ("anime", 0, 5),
        ("anime", 0, 6),
    ]
    # The same seeds generated directly, scored for their own prompt, give the same scores.
    dog = generate(pipe, "a dog", [1005, 1006], steps=2)
    expected = scorer.score("a dog", [g.image for g in dog])
    assert results[0].scores[1] == pytest.approx(expected, abs=1e-4)
    assert results[0].scores[1] != pytest.approx(scorer.score("a robot", [g.image for g in dog]))
    # The grid: the first seed of each prompt, then the next seeds.
    photo = results[0].examples
    assert [(e.prompt, e.seed) for e in photo] == [
        ("a red car", 5),
        ("a dog", 1005),
        ("a red car", 6),
    ]
    assert np.array_equal(np.asarray(photo[1].image), np.asarray(dog[0].image))
    assert photo[1].score == pytest.approx(expected[0], abs=1e-4)
    assert [e.seed for e in results[1].examples] == [5, 6]


# -- the grid -----------------------------------------------------------------------------------

COLOURS = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]


def solid(colour: Sequence[int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), tuple(colour))


def test_grid_has_a_row_per_style_with_its_images(tmp_path: Path) -> None:
    results = [
        StyleResult(
            "photo",
            ["p"],
            [[1.0, 2.0, 3.0]],
            [Example(solid(c, 80), "p", k, float(k)) for k, c in enumerate(COLOURS)],
        ),
        StyleResult("anime", ["q"], [[4.0]], [Example(solid(COLOURS[2], 80), "q", 0, 4.0)]),
    ]
    summaries = [summarise_style(r.style, r.scores) for r in results]
    path = draw_grid(results, summaries, tmp_path / "sub" / "grid.png")
    with Image.open(path) as opened:
        assert opened.format == "PNG"
        grid = opened.convert("RGB")
    row = 80 + 2 * LABEL_HEIGHT
    assert grid.size == (3 * 80, 2 * row)
    for column, colour in enumerate(COLOURS):
        centre = (column * 80 + 40, LABEL_HEIGHT + 40)
        assert grid.getpixel(centre) == colour
    assert grid.getpixel((40, row + LABEL_HEIGHT + 40)) == COLOURS[2]
    assert grid.getpixel((80 + 40, row + LABEL_HEIGHT + 40)) == (255, 255, 255)  # no 2nd image
    label = np.asarray(grid)[row : row + LABEL_HEIGHT, :80]
    assert (label != 255).any()  # the style's label is drawn
    score = np.asarray(grid)[LABEL_HEIGHT + 80 : row, 80:160]
    assert (score != 255).any()  # each image's score under it


def test_small_images_are_enlarged_pixel_for_pixel(tmp_path: Path) -> None:
    small = Image.new("RGB", (2, 2))
    small.putdata([COLOURS[0], COLOURS[1], COLOURS[2], (0, 0, 0)])
    results = [StyleResult("photo", ["p"], [[1.0]], [Example(small, "p", 0, 1.0)])]
    path = draw_grid(results, [summarise_style("photo", [[1.0]])], tmp_path / "grid.png")
    with Image.open(path) as opened:
        grid = opened.convert("RGB")
    assert grid.size == (MIN_TILE, MIN_TILE + 2 * LABEL_HEIGHT)
    half = MIN_TILE // 2
    tile = np.asarray(grid)[LABEL_HEIGHT : LABEL_HEIGHT + MIN_TILE]
    assert (tile[:half, :half] == COLOURS[0]).all() and (tile[half:, half:] == 0).all()


def test_document_holds_every_score(tmp_path: Path) -> None:
    results = [StyleResult("photo", ["a", "b"], [[1.0, 2.0], [3.0, 4.0]])]
    summaries = [summarise_style("photo", results[0].scores)]
    document = benchmark_document(results, summaries, {"pipeline": "tiny"})
    assert document["pipeline"] == "tiny" and document["averaged"] == 2.5
    assert document["scores"] == {
        "photo": [{"prompt": "a", "scores": [1.0, 2.0]}, {"prompt": "b", "scores": [3.0, 4.0]}]
    }
    json.dumps(document, allow_nan=False)
