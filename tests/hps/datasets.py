"""Preference data sets made by the tests: images with a planted rule that decides the pick."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

SUBJECTS = ["a cat", "a lighthouse", "a bowl of fruit", "a robot", "a forest", "a city", "a boat"]
STYLES = ["at night", "in watercolour", "as a photo", "in the snow", "under neon light"]


def planted_image(rng: random.Random, preferred: bool, size: int = 64) -> Image.Image:
    """Muted random background with clutter; the preferred image carries a big red disc."""
    background = tuple(rng.randrange(40, 150) for _ in range(3))
    image = Image.new("RGB", (size + rng.randrange(0, 32), size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.randrange(image.width), rng.randrange(image.height)
        r = rng.randrange(3, 10)
        color = (rng.randrange(0, 90), rng.randrange(60, 200), rng.randrange(60, 200))
        draw.rectangle((x - r, y - r, x + r, y + r), fill=color)
    if preferred:
        cx, cy = rng.randrange(20, image.width - 20), rng.randrange(20, image.height - 20)
        draw.ellipse((cx - 16, cy - 16, cx + 16, cy + 16), fill=(235, 20, 20))
    return image


def write_planted_sets(
    folder: Path, count: int, *, seed: int, set_sizes: tuple[int, ...] = (4,), prefix: str = "p"
) -> list[dict[str, object]]:
    """Write ``count`` sets of images to ``folder``; return export-format records (image
    paths relative to the folder above, where the manifests go)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        size = set_sizes[index % len(set_sizes)]
        chosen = rng.randrange(size)
        names = []
        for position in range(size):
            name = f"{prefix}{index:05d}_{position}.png"
            planted_image(rng, position == chosen).save(folder / name)
            names.append(f"{folder.name}/{name}")
        prompt = f"{rng.choice(SUBJECTS)} {rng.choice(STYLES)} #{prefix}{index}"
        records.append({"prompt": prompt, "images": names, "chosen_index": chosen})
    return records


def write_export_manifest(path: Path, records: list[dict[str, object]]) -> Path:
    """The project's own JSON-lines export format."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def write_hpd_v1_manifest(path: Path, records: list[dict[str, object]]) -> Path:
    """HPD v1: file_path + human_preference index."""
    rows = [
        {"prompt": r["prompt"], "file_path": r["images"], "human_preference": r["chosen_index"]}
        for r in records
    ]
    path.write_text(json.dumps(rows))
    return path
