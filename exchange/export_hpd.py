"""HPD-compatible JSON manifests with their image folders, written streaming.

Layout under ``<export>/hpd/`` (paths in the JSON are relative to that folder, as the HPD
readers expect them relative to the manifest):

- ``images/<split>/<sha256>.png``: the stored canonical PNG of every exported image, once
  per split (a prompt, and so its images, belongs to one split).
- ``v1_<split>.json``: HPD v1 style, **one record per pick**: ``prompt``, ``file_path`` (the
  generation's images in position order) and ``human_preference`` (index of the chosen image).
  Skips carry no index and are left out. Extra keys (ignored by HPD readers) let an import
  rebuild users and generations: ``user_id`` (salted pseudonym), ``generation_uid``,
  ``ranking_id``, ``generator``, ``created_at``.
- ``v2_<split>.json``: HPD v2 test style, **one record per generation**: ``prompt``,
  ``image_path`` and ``rank`` (lower is better), aggregated over every exported pick on the
  generation: images are ordered by their number of picks, ties share a rank (competition
  ranking "1224"), images nobody picked share the last rank. With a single pick that is rank 1
  for the chosen image and rank 2 for all others. ``votes`` (picks per image) is kept beside
  the ranks. Generations whose exported choices are all skips have no ranking and are left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from db.datasets import SPLITS
from db.export_queries import ExportChoice


class JsonListWriter:
    """Writes a JSON list one record at a time (the file is valid JSON once closed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._handle: IO[str] = path.open("w", encoding="utf-8")
        self._handle.write("[")

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        self._handle.write(",\n" if self.count else "\n")
        self._handle.write(json.dumps(record, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        """Terminate the list and close the file."""
        if not self._handle.closed:
            self._handle.write("\n]\n" if self.count else "]\n")
            self._handle.close()


def ranks_from_votes(votes: list[int]) -> list[int]:
    """Competition ranking (1 is best): more votes rank higher, equal votes share a rank."""
    return [1 + sum(1 for other in votes if other > mine) for mine in votes]


class HpdWriter:
    """Writes the HPD v1 and v2 manifests and the image folders of every split."""

    def __init__(self, root: Path) -> None:
        self.root = root / "hpd"
        self.root.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            (self.root / "images" / split).mkdir(parents=True, exist_ok=True)
        self.v1 = {split: JsonListWriter(self.root / f"v1_{split}.json") for split in SPLITS}
        self.v2 = {split: JsonListWriter(self.root / f"v2_{split}.json") for split in SPLITS}
        self.images_written = 0
        self._generation: dict[str, Any] | None = None

    def image_paths(self, choice: ExportChoice) -> list[str]:
        """Relative paths of a choice's images."""
        return [f"images/{choice.split}/{image.sha256}.png" for image in choice.images]

    def add_choice(
        self,
        choice: ExportChoice,
        png: Callable[[str], bytes],
        *,
        user_uid: str,
        generation_uid: str,
    ) -> None:
        """Write the images (once), the v1 record of a pick, and count the pick for the
        generation's v2 ranking (emitted when the next generation starts, or at close)."""
        paths = self.image_paths(choice)
        for image, relative in zip(choice.images, paths, strict=True):
            target = self.root / relative
            if not target.exists():
                data = png(image.sha256)
                partial = target.with_suffix(".part")
                partial.write_bytes(data)
                partial.replace(target)
                self.images_written += 1
        current = self._generation
        if current is None or current["generation_id"] != choice.generation_id:
            self._emit_generation()
            current = self._generation = {
                "generation_id": choice.generation_id,
                "split": choice.split,
                "record": {
                    "prompt": choice.prompt,
                    "image_path": paths,
                    "generation_uid": generation_uid,
                    "generator": choice.generator,
                },
                "votes": [0] * len(paths),
            }
        if choice.chosen_index is None:
            return
        current["votes"][choice.chosen_index] += 1
        self.v1[choice.split].write(
            {
                "prompt": choice.prompt,
                "file_path": paths,
                "human_preference": choice.chosen_index,
                "user_id": user_uid,
                "generation_uid": generation_uid,
                "ranking_id": choice.choice_id,
                "generator": choice.generator,
                "created_at": choice.chosen_at.isoformat(),
            }
        )

    def _emit_generation(self) -> None:
        current, self._generation = self._generation, None
        if current is None or not any(current["votes"]):
            return
        record = dict(current["record"])
        record["rank"] = ranks_from_votes(current["votes"])
        record["votes"] = current["votes"]
        self.v2[current["split"]].write(record)

    def counts(self) -> dict[str, dict[str, int]]:
        """Records written per manifest and split."""
        return {
            "v1": {split: writer.count for split, writer in self.v1.items()},
            "v2": {split: writer.count for split, writer in self.v2.items()},
        }

    def close(self) -> list[Path]:
        """Emit the last generation's ranking, close every manifest; return their paths."""
        self._emit_generation()
        paths = []
        for writer in [*self.v1.values(), *self.v2.values()]:
            writer.close()
            paths.append(writer.path)
        return paths

    def abort(self) -> None:
        """Close the files (the caller removes the export folder)."""
        for writer in [*self.v1.values(), *self.v2.values()]:
            writer.close()
