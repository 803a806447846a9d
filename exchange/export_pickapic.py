"""Pick-a-Pic-compatible parquet: one row per pair of images, written streaming.

How pairs are built from one choice among n images (positions 0..n-1):

- a pick of image c makes n - 1 rows, c against each other image j, labels 1 / 0;
- a skip (the user preferred none) makes n(n-1)/2 tie rows, labels 0.5 / 0.5, empty
  ``best_image_uid`` (Pick-a-Pic's encoding of a tie).

In every row the two images are in position order (``image_0`` has the lower position), so the
label side is not correlated with the pick. Columns are Pick-a-Pic's (``caption``, ``jpg_0``,
``jpg_1``, ``label_0``, ``label_1``, ``best_image_uid``, ``image_0_uid``, ``image_1_uid``,
``model_0``, ``model_1``, ``user_id``, ``ranking_id``, ``created_at``,
``num_example_per_prompt``, ``has_label``, ``are_different``) plus ``generation_uid``,
``image_0_position`` and ``image_1_position``, which let an import rebuild the image sets
exactly. ``user_id`` and ``generation_uid`` are salted pseudonyms; ``image_*_uid`` is the
sha256 of the stored PNG (the same name as the HPD folder's file).

Arena duel votes (:mod:`db.arena`) are rows too, one per vote: side A is ``image_0``, side B
``image_1`` (sides were drawn at random, so the label side is not correlated with the vote),
``model_0``/``model_1`` name the two configurations, labels 1 / 0 for a side, 0.5 / 0.5 for a
tie (empty ``best_image_uid``); both_bad votes carry no preference and are not exported.
``ranking_id`` is the vote's id negated (choices' ids are positive, so the two never
collide) and ``generation_uid`` a pseudonym of the duel.

Files are ``data/<split>-<k>-of-<n>.parquet`` (``n`` known at the end: shards are written
under temporary names and renamed; a shard ends between two choices once it has
``rows_per_shard`` rows, so the rows of one choice are always in one file), each written in
row groups with
``pyarrow.parquet.ParquetWriter`` so only one row group per split is held in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from db.arena import ExportDuelVote
from db.datasets import SPLITS
from db.export_queries import ExportChoice
from db.models import DuelVoteKind

DEFAULT_ROWS_PER_SHARD = 20_000
DEFAULT_ROW_GROUP_ROWS = 256
PARTIAL_SUFFIX = ".parquet.partial"


def pickapic_schema() -> Any:
    """The arrow schema of the exported parquet files."""
    import pyarrow as pa

    return pa.schema(
        [
            ("caption", pa.string()),
            ("jpg_0", pa.binary()),
            ("jpg_1", pa.binary()),
            ("label_0", pa.float64()),
            ("label_1", pa.float64()),
            ("best_image_uid", pa.string()),
            ("image_0_uid", pa.string()),
            ("image_1_uid", pa.string()),
            ("model_0", pa.string()),
            ("model_1", pa.string()),
            ("user_id", pa.string()),
            ("ranking_id", pa.int64()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("num_example_per_prompt", pa.int64()),
            ("has_label", pa.bool_()),
            ("are_different", pa.bool_()),
            ("generation_uid", pa.string()),
            ("image_0_position", pa.int16()),
            ("image_1_position", pa.int16()),
        ]
    )


def pairs_for_choice(size: int, chosen: int | None) -> list[tuple[int, int, float, float]]:
    """The pairs ``(i, j, label_i, label_j)`` (``i < j``) one choice among ``size`` images
    makes: the chosen image against every other one, or every pair tied for a skip."""
    if size < 2:
        return []
    if chosen is None:
        return [(i, j, 0.5, 0.5) for i in range(size) for j in range(i + 1, size)]
    if not 0 <= chosen < size:
        raise ValueError(f"chosen index {chosen} outside 0..{size - 1}")
    return [
        (min(chosen, j), max(chosen, j), *((1.0, 0.0) if chosen < j else (0.0, 1.0)))
        for j in range(size)
        if j != chosen
    ]


def image_models(choice: ExportChoice) -> list[str]:
    """The generator of each image: ``params["models"]`` when an import recorded one per
    image (Pick-a-Pic pairs of two models), else the generation's generator."""
    models = choice.generation_params.get("models")
    if isinstance(models, list) and len(models) == len(choice.images):
        return [str(model) for model in models]
    return [choice.generator] * len(choice.images)


@dataclass(frozen=True)
class PairContext:
    """What the rows of one choice need beyond the choice itself."""

    user_uid: str
    generation_uid: str
    num_example_per_prompt: int


def rows_for_choice(
    choice: ExportChoice, jpegs: list[bytes], context: PairContext
) -> list[dict[str, Any]]:
    """The Pick-a-Pic rows of one choice (``jpegs`` in position order)."""
    models = image_models(choice)
    uids = [image.sha256 for image in choice.images]
    best = uids[choice.chosen_index] if choice.chosen_index is not None else ""
    rows = []
    for i, j, label_i, label_j in pairs_for_choice(len(uids), choice.chosen_index):
        rows.append(
            {
                "caption": choice.prompt,
                "jpg_0": jpegs[i],
                "jpg_1": jpegs[j],
                "label_0": label_i,
                "label_1": label_j,
                "best_image_uid": best,
                "image_0_uid": uids[i],
                "image_1_uid": uids[j],
                "model_0": models[i],
                "model_1": models[j],
                "user_id": context.user_uid,
                "ranking_id": choice.choice_id,
                "created_at": choice.chosen_at,
                "num_example_per_prompt": context.num_example_per_prompt,
                "has_label": True,
                "are_different": uids[i] != uids[j],
                "generation_uid": context.generation_uid,
                "image_0_position": choice.images[i].position,
                "image_1_position": choice.images[j].position,
            }
        )
    return rows


DUEL_LABELS = {
    DuelVoteKind.a: (1.0, 0.0),
    DuelVoteKind.b: (0.0, 1.0),
    DuelVoteKind.tie: (0.5, 0.5),
}


def row_for_duel_vote(
    vote: ExportDuelVote, jpeg_a: bytes, jpeg_b: bytes, context: PairContext
) -> dict[str, Any]:
    """The Pick-a-Pic row of one duel vote (A is image 0). ValueError for a both_bad vote,
    which carries no preference."""
    labels = DUEL_LABELS.get(vote.vote)
    if labels is None:
        raise ValueError(f"a {vote.vote.value} vote carries no preference; it is not exported")
    uids = (vote.image_a_sha256, vote.image_b_sha256)
    best = "" if labels[0] == labels[1] else uids[0 if labels[0] > labels[1] else 1]
    return {
        "caption": vote.prompt,
        "jpg_0": jpeg_a,
        "jpg_1": jpeg_b,
        "label_0": labels[0],
        "label_1": labels[1],
        "best_image_uid": best,
        "image_0_uid": uids[0],
        "image_1_uid": uids[1],
        "model_0": vote.model_a,
        "model_1": vote.model_b,
        "user_id": context.user_uid,
        "ranking_id": -vote.vote_id,
        "created_at": vote.voted_at,
        "num_example_per_prompt": context.num_example_per_prompt,
        "has_label": True,
        "are_different": uids[0] != uids[1],
        "generation_uid": context.generation_uid,
        "image_0_position": 0,
        "image_1_position": 1,
    }


class _SplitShards:
    """The shards of one split: an open ParquetWriter and the rows of its next row group.

    A choice's rows always land in one shard (a shard is closed only between choices, once it
    holds ``rows_per_shard`` rows), so a reader of one file sees whole choices."""

    def __init__(self, folder: Path, split: str, schema: Any, rows_per_shard: int) -> None:
        self.folder = folder
        self.split = split
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.shards: list[Path] = []
        self.writer: Any = None
        self.rows_in_shard = 0  # written and buffered
        self.rows = 0  # written and buffered, all shards
        self.buffer: list[dict[str, Any]] = []

    def _open(self) -> None:
        import pyarrow.parquet as pq

        path = self.folder / f"{self.split}-{len(self.shards):05d}{PARTIAL_SUFFIX}"
        self.shards.append(path)
        # Pages of a few rows (a page closes once past 1 MiB, checked every 8 rows): a reader
        # decompresses a whole page at once, so an export's images stay cheap to import.
        self.writer = pq.ParquetWriter(
            path, self.schema, compression="snappy", write_batch_size=8, data_page_size=1 << 20
        )

    def add_choice(self, rows: list[dict[str, Any]], row_group_rows: int) -> None:
        if self.rows_in_shard >= self.rows_per_shard:
            self.flush()
            self.close_writer()
            self.rows_in_shard = 0
        self.buffer.extend(rows)
        self.rows_in_shard += len(rows)
        self.rows += len(rows)
        if len(self.buffer) >= row_group_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if not self.buffer:
            return
        if self.writer is None:
            self._open()
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))
        self.buffer = []

    def close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def finish(self) -> list[Path]:
        self.flush()
        if not self.shards:  # an empty split still gets a file (schema only)
            self._open()
        self.close_writer()
        total = len(self.shards)
        final = []
        for index, partial in enumerate(self.shards):
            target = self.folder / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            partial.rename(target)
            final.append(target)
        return final

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.close_writer()
        for partial in self.shards:
            partial.unlink(missing_ok=True)


class PickAPicWriter:
    """Writes Pick-a-Pic rows of every split into ``<root>/data``, streaming."""

    def __init__(
        self,
        root: Path,
        *,
        rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ) -> None:
        if rows_per_shard < 1 or row_group_rows < 1:
            raise ValueError("rows per shard and per row group must be positive")
        self.folder = root / "data"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.row_group_rows = row_group_rows
        schema = pickapic_schema()
        self.splits = {
            split: _SplitShards(self.folder, split, schema, rows_per_shard) for split in SPLITS
        }

    def add_choice(
        self, choice: ExportChoice, jpeg: Callable[[str], bytes], context: PairContext
    ) -> int:
        """Write the rows of one choice; ``jpeg(sha256)`` supplies image bytes. Returns the
        number of rows written."""
        jpegs = [jpeg(image.sha256) for image in choice.images]
        rows = rows_for_choice(choice, jpegs, context)
        self.splits[choice.split].add_choice(rows, self.row_group_rows)
        return len(rows)

    def add_duel_vote(
        self, vote: ExportDuelVote, jpeg: Callable[[str], bytes], context: PairContext
    ) -> int:
        """Write the row of one duel vote (:func:`row_for_duel_vote`); returns 1."""
        row = row_for_duel_vote(vote, jpeg(vote.image_a_sha256), jpeg(vote.image_b_sha256), context)
        self.splits[vote.split].add_choice([row], self.row_group_rows)
        return 1

    def rows_per_split(self) -> dict[str, int]:
        """Rows written (or buffered) so far, per split."""
        return {split: shards.rows for split, shards in self.splits.items()}

    def close(self) -> dict[str, list[Path]]:
        """Flush, close and give every shard its final ``-of-`` name; return them by split."""
        return {split: shards.finish() for split, shards in self.splits.items()}

    def abort(self) -> None:
        """Close and delete everything written (after a failure or a cancel)."""
        for shards in self.splits.values():
            shards.abort()
