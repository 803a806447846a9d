"""An HPSv2-style benchmark of a text-to-image generator: prompts grouped by style, a few seeds
per prompt, the mean HPS of each style with its spread, and a grid of examples.

HPSv2's benchmark has four styles (anime, concept-art, paintings, photo) of 800 prompts each,
one JSON list of prompts per style (``<style>.json``), and reports per style the mean score and
its standard deviation, and their average over the styles. Here:

- a prompt file is a JSON object ``{style: [prompts]}``, one ``<style>.json`` list (or a
  folder of them), or a text file of ``style<TAB>prompt`` lines (or of bare prompts: one style,
  ``all``);
- the images of prompt ``i`` come from the seeds ``first_seed + i * SEED_STRIDE + k`` for
  ``k < seeds``: a style's images do not depend on the other styles, nor on ``--limit``, and
  more seeds keep the first ones' images;
- per style: ``mean`` and ``std`` of every image's HPS, ``seed_std`` (the spread of the style
  mean between seeds: how much the number would move with other seeds) and a 95% bootstrap
  interval of the mean resampling prompts; ``averaged`` is the mean of the style means (HPSv2's
  "Averaged" column).
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw

from hps.diffusion.pipelines import GeneratedImage, generate
from hps.evaluation import bootstrap_interval

if TYPE_CHECKING:
    from hps.evaluation import Scorer

STYLELESS = "all"  # the style of prompts given without one
SEED_STRIDE = 1000  # seeds of consecutive prompts are this far apart (so at most 1000 seeds)
GRID_COLUMNS = 4
LABEL_HEIGHT = 14
MIN_TILE = 64  # smaller images are enlarged (nearest neighbour) so that their scores fit

StylePrompts = dict[str, list[str]]
ImageSink = Callable[[str, int, GeneratedImage], None]


class BenchmarkError(ValueError):
    """A prompt file or a benchmark setting is unusable; the message says why."""


# -- prompt files -------------------------------------------------------------------------------


def read_style_prompts(path: Path) -> StylePrompts:
    """The prompts of each style in ``path``, in the file's order: a JSON object
    ``{style: [prompts]}``, a JSON list (one style, named after the file), a folder of
    ``<style>.json`` lists (HPSv2's layout), or text lines ``style<TAB>prompt`` / ``prompt``."""
    if path.is_dir():
        styles = _read_style_folder(path)
    elif not path.is_file():
        raise BenchmarkError(f"{path}: no such prompt file or folder")
    elif path.suffix.lower() == ".json":
        styles = _read_json_file(path)
    else:
        styles = _read_text_file(path)
    if not styles:
        raise BenchmarkError(f"{path}: no styles")
    return styles


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BenchmarkError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BenchmarkError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None


def _prompt_list(value: Any, where: str) -> list[str]:
    """``value`` as a non-empty list of non-empty prompt strings."""
    if not isinstance(value, list):
        raise BenchmarkError(f"{where}: expected a list of prompts, got {type(value).__name__}")
    if not value:
        raise BenchmarkError(f"{where}: no prompts (an empty style)")
    for number, prompt in enumerate(value, 1):
        if not isinstance(prompt, str):
            raise BenchmarkError(
                f"{where}: prompt {number} is {type(prompt).__name__}, not a string"
            )
        if not prompt.strip():
            raise BenchmarkError(f"{where}: prompt {number} is empty")
    return [prompt.strip() for prompt in value]


def _check_style_name(style: str, where: str) -> str:
    if not style.strip():
        raise BenchmarkError(f"{where}: a style has an empty name")
    return style.strip()


def _read_json_file(path: Path) -> StylePrompts:
    data = _load_json(path)
    if isinstance(data, list):
        return {path.stem: _prompt_list(data, str(path))}
    if not isinstance(data, dict):
        raise BenchmarkError(
            f"{path}: expected an object {{style: [prompts]}} or a list of prompts, "
            f"got {type(data).__name__}"
        )
    styles: StylePrompts = {}
    for style, prompts in data.items():
        name = _check_style_name(style, str(path))
        styles[name] = _prompt_list(prompts, f"{path}: style {name!r}")
    return styles


def _read_style_folder(path: Path) -> StylePrompts:
    files = sorted(file for file in path.glob("*.json") if file.is_file())
    if not files:
        raise BenchmarkError(f"{path}: no <style>.json files in this folder")
    styles: StylePrompts = {}
    for file in files:
        data = _load_json(file)
        if not isinstance(data, list):
            raise BenchmarkError(
                f"{file}: a style file holds a JSON list of prompts, got {type(data).__name__}"
            )
        styles[file.stem] = _prompt_list(data, str(file))
    return styles


def _read_text_file(path: Path) -> StylePrompts:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise BenchmarkError(f"{path}: not UTF-8 text") from None
    entries = [
        (number, _split_line(line, f"{path}:{number}"))
        for number, line in enumerate(lines, 1)
        if line.strip()
    ]
    styled = [number for number, (style, _) in entries if style is not None]
    plain = [number for number, (style, _) in entries if style is None]
    if styled and plain:
        raise BenchmarkError(
            f"{path}: line {plain[0]} has no style (style<TAB>prompt) but line {styled[0]} has "
            "one: give every line a style, or none"
        )
    styles: StylePrompts = {}
    for _, (style, prompt) in entries:
        styles.setdefault(style or STYLELESS, []).append(prompt)
    return styles


def _split_line(line: str, where: str) -> tuple[str | None, str]:
    """(style or None, prompt) of one non-blank text line."""
    if "\t" not in line:
        return None, line.strip()
    style, prompt = line.split("\t", 1)
    if not style.strip():
        raise BenchmarkError(f"{where}: empty style before the tab")
    if not prompt.strip():
        raise BenchmarkError(f"{where}: no prompt after the style {style.strip()!r}")
    return style.strip(), prompt.strip()


def limit_styles(styles: StylePrompts, limit: int | None) -> StylePrompts:
    """The first ``limit`` prompts of every style (all of them when ``limit`` is None)."""
    if limit is None:
        return dict(styles)
    if limit < 1:
        raise BenchmarkError(f"the limit per style must be at least 1, not {limit}")
    return {style: prompts[:limit] for style, prompts in styles.items()}


# -- generating and scoring ---------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSettings:
    """How every image is generated, and how many go in the grid."""

    seeds: int = 1
    first_seed: int = 0
    inference_steps: int = 25
    guidance_scale: float = 7.5
    negative_prompt: str | None = None
    batch_size: int = 4
    grid_columns: int = GRID_COLUMNS

    def __post_init__(self) -> None:
        if not 1 <= self.seeds <= SEED_STRIDE:
            raise BenchmarkError(f"seeds per prompt must be 1 to {SEED_STRIDE}, not {self.seeds}")
        for name in ("inference_steps", "batch_size", "grid_columns"):
            if getattr(self, name) < 1:
                raise BenchmarkError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.first_seed < 0:
            raise BenchmarkError(f"the first seed must be 0 or more, not {self.first_seed}")


def prompt_seeds(index: int, settings: BenchmarkSettings) -> list[int]:
    """The seeds of a style's ``index``-th prompt."""
    start = settings.first_seed + index * SEED_STRIDE
    return list(range(start, start + settings.seeds))


@dataclass(frozen=True)
class Example:
    """An image shown in the grid, with its score."""

    image: Image.Image
    prompt: str
    seed: int
    score: float


@dataclass
class StyleResult:
    """A style's scores, per prompt then per seed, and the images kept for the grid."""

    style: str
    prompts: list[str]
    scores: list[list[float]] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)


def run_benchmark(
    pipe: Any,
    scorer: Scorer,
    styles: StylePrompts,
    settings: BenchmarkSettings,
    *,
    on_images: Callable[[str, int], None] | None = None,
    save_image: ImageSink | None = None,
) -> list[StyleResult]:
    """Generate ``settings.seeds`` images for every prompt of every style and score each for
    its prompt. ``on_images(style, n)`` is called after each prompt's ``n`` images;
    ``save_image(style, prompt_index, image)`` receives every image."""
    return [
        run_style(pipe, scorer, style, prompts, settings, on_images, save_image)
        for style, prompts in styles.items()
    ]


def run_style(
    pipe: Any,
    scorer: Scorer,
    style: str,
    prompts: Sequence[str],
    settings: BenchmarkSettings,
    on_images: Callable[[str, int], None] | None = None,
    save_image: ImageSink | None = None,
) -> StyleResult:
    """One style of :func:`run_benchmark`."""
    result = StyleResult(style, list(prompts))
    candidates: list[tuple[int, int, Example]] = []  # (seed number, prompt index, example)
    for index, prompt in enumerate(prompts):
        images = generate(
            pipe,
            prompt,
            prompt_seeds(index, settings),
            steps=settings.inference_steps,
            guidance_scale=settings.guidance_scale,
            negative_prompt=settings.negative_prompt,
            batch_size=settings.batch_size,
        )
        scores = scorer.score(prompt, [generated.image for generated in images])
        result.scores.append(scores)
        if index < settings.grid_columns:
            candidates += [
                (k, index, Example(g.image, prompt, g.seed, score))
                for k, (g, score) in enumerate(zip(images, scores, strict=True))
            ]
        if save_image is not None:
            for generated in images:
                save_image(style, index, generated)
        if on_images is not None:
            on_images(style, len(images))
    # The grid shows the first seed of the first prompts, then their next seeds.
    candidates.sort(key=lambda candidate: candidate[:2])
    result.examples = [example for _, _, example in candidates[: settings.grid_columns]]
    return result


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StyleSummary:
    """A style's numbers (see the module's docstring)."""

    style: str
    prompts: int
    images: int
    mean: float
    std: float
    seed_std: float | None
    interval: tuple[float, float]

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        return {
            "prompts": self.prompts,
            "images": self.images,
            "mean": self.mean,
            "std": self.std,
            "seed_std": self.seed_std,
            "interval": list(self.interval),
        }


def summarise_style(style: str, scores: Sequence[Sequence[float]]) -> StyleSummary:
    """Mean and standard deviation (numpy's, ddof 0, as HPSv2 reports) of every image's score;
    the standard deviation of the per-seed means (None with one seed); the 95% bootstrap
    interval of the mean over prompts (each prompt's mean over its seeds)."""
    if not scores:
        raise BenchmarkError(f"style {style!r}: no scores")
    seeds = len(scores[0])
    if seeds == 0 or any(len(row) != seeds for row in scores):
        raise BenchmarkError(f"style {style!r}: every prompt needs the same number of scores")
    flat = [score for row in scores for score in row]
    seed_means = [statistics.fmean(row[k] for row in scores) for k in range(seeds)]
    return StyleSummary(
        style=style,
        prompts=len(scores),
        images=len(flat),
        mean=statistics.fmean(flat),
        std=statistics.pstdev(flat),
        seed_std=statistics.pstdev(seed_means) if seeds > 1 else None,
        interval=bootstrap_interval([statistics.fmean(row) for row in scores]),
    )


def averaged(summaries: Sequence[StyleSummary]) -> float:
    """The mean of the style means (HPSv2's "Averaged")."""
    if not summaries:
        raise BenchmarkError("no styles to average")
    return statistics.fmean(summary.mean for summary in summaries)


def summary_dict(summaries: Sequence[StyleSummary]) -> dict[str, Any]:
    """``{"styles": {style: numbers}, "averaged": ..., "images": ...}``."""
    return {
        "styles": {summary.style: summary.as_dict() for summary in summaries},
        "averaged": averaged(summaries),
        "images": sum(summary.images for summary in summaries),
    }


def format_table(summaries: Sequence[StyleSummary]) -> str:
    """A plain-text table: one row per style and an ``averaged`` row."""
    header = f"{'style':<16}{'prompts':>8}{'images':>8}{'mean':>9}{'std':>8}"
    header += f"{'seed std':>9}  95% interval"
    lines = [header, "-" * len(header)]
    for s in summaries:
        seed_std = "-" if s.seed_std is None else f"{s.seed_std:.2f}"
        lines.append(
            f"{s.style[:15]:<16}{s.prompts:>8}{s.images:>8}{s.mean:>9.2f}{s.std:>8.2f}"
            f"{seed_std:>9}  [{s.interval[0]:.2f}, {s.interval[1]:.2f}]"
        )
    total = sum(s.images for s in summaries)
    prompts = sum(s.prompts for s in summaries)
    lines.append(f"{'averaged':<16}{prompts:>8}{total:>8}{averaged(summaries):>9.2f}")
    return "\n".join(lines)


# -- the grid and the files ---------------------------------------------------------------------


def grid_layout(results: Sequence[StyleResult]) -> tuple[int, int, int]:
    """(columns, tile size in pixels, rows) of the grid of ``results``: the first image's
    width, at least ``MIN_TILE``."""
    columns = max((len(r.examples) for r in results), default=0)
    tiles = [example.image.width for r in results for example in r.examples]
    return max(1, columns), max(MIN_TILE, tiles[0] if tiles else 0), len(results)


def draw_grid(
    results: Sequence[StyleResult], summaries: Sequence[StyleSummary], path: Path
) -> Path:
    """One row per style: a line naming the style with its mean ± std, its example images, and
    each image's HPS under it."""
    columns, tile, rows = grid_layout(results)
    row_height = tile + 2 * LABEL_HEIGHT
    grid = Image.new("RGB", (columns * tile, rows * row_height), "white")
    draw = ImageDraw.Draw(grid)
    for row, (result, summary) in enumerate(zip(results, summaries, strict=True)):
        top = row * row_height
        label = f"{result.style}: {summary.mean:.2f} ± {summary.std:.2f}"
        draw.text((2, top + 1), label, fill=(0, 0, 128))
        for column, example in enumerate(result.examples):
            left = column * tile
            image = example.image.convert("RGB").resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(image, (left, top + LABEL_HEIGHT))
            draw.text((left + 2, top + LABEL_HEIGHT + tile + 1), f"{example.score:.2f}", fill=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def style_folder_name(style: str) -> str:
    """A file-system-safe folder name for a style."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", style).strip("._") or "style"


def image_path(out: Path, style: str, prompt_index: int, seed: int) -> Path:
    """Where ``--save-images`` writes an image: ``images/<style>/<prompt index>_<seed>.png``."""
    return out / "images" / style_folder_name(style) / f"{prompt_index:05d}_{seed}.png"


def benchmark_document(
    results: Sequence[StyleResult], summaries: Sequence[StyleSummary], run: dict[str, Any]
) -> dict[str, Any]:
    """What ``benchmark.json`` holds: the run's description, the summary, and every score
    (per style, per prompt, per seed)."""
    return {
        **run,
        **summary_dict(summaries),
        "scores": {
            r.style: [
                {"prompt": prompt, "scores": scores}
                for prompt, scores in zip(r.prompts, r.scores, strict=True)
            ]
            for r in results
        },
    }
