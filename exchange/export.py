"""One export: every exportable choice, in one database snapshot, to Pick-a-Pic parquet and
HPD JSON + image folders, with a dataset card and a histogram.

The export is written into a hidden ``.<name>.partial`` folder next to the target and renamed
into place at the end, so a reader never sees half an export, and a failed or cancelled
export leaves nothing behind. Memory stays bounded: choices are streamed from the database,
images go through a small cache, parquet is written in row groups.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.arena import ExportDuelVote, export_duel_votes_per_prompt, iter_export_duel_votes
from db.datasets import SPLITS
from db.export_queries import (
    ExportChoice,
    ExportPlan,
    begin_snapshot,
    consent_modes,
    iter_export_choices,
    opted_out_users,
    plan_export,
)
from db.scope import Scope, pooled_guild_ids
from exchange.card import (
    DEFAULT_LICENSE,
    FORMATS,
    HISTOGRAM_FILE,
    CardInfo,
    histogram_png,
    pooled_scope_text,
    render_card,
)
from exchange.export_hpd import HpdWriter
from exchange.export_pickapic import (
    DEFAULT_ROW_GROUP_ROWS,
    DEFAULT_ROWS_PER_SHARD,
    PairContext,
    PickAPicWriter,
)
from exchange.ids import pseudonym
from exchange.images import DEFAULT_JPEG_QUALITY, ImageReader
from media.store import BlobNotFound, ImageStore

Progress = Callable[[int, int, str], None]
"""``progress(done, total, message)``: called after each choice; may raise to stop."""


@dataclass
class ExportOptions:
    """What to export and how."""

    split_salt: str
    user_salt: str
    formats: tuple[str, ...] = FORMATS
    license: str = DEFAULT_LICENSE
    name: str = "Discord community image preferences"
    cutoff: datetime | None = None
    # Only this guild's generations (a guild admin's export); None: the operators' export of
    # the guilds that pool their data (and data imported without a guild).
    guild_id: int | None = None
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS


@dataclass
class ExportSummary:
    """What an export wrote (JSON-serialisable through :meth:`as_dict`)."""

    path: Path
    created_at: datetime
    cutoff: datetime
    formats: list[str]
    license: str
    counts: dict[str, int]
    splits: dict[str, dict[str, int]]
    files: list[str]
    histogram: Path
    skipped_missing_images: int = 0
    guild_id: int | None = None
    card: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types only."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["histogram"] = str(self.histogram)
        data["card"] = str(self.card) if self.card else None
        data["created_at"] = self.created_at.isoformat()
        data["cutoff"] = self.cutoff.isoformat()
        return data


@dataclass
class _Tally:
    prompts: set[int] = field(default_factory=set)
    generations: dict[int, int] = field(default_factory=dict)  # generation -> image count
    users: set[int] = field(default_factory=set)
    choices_per_prompt: Counter[int] = field(default_factory=Counter)
    choices: int = 0
    picks: int = 0
    skips: int = 0
    pairs: int = 0
    split_prompts: dict[str, set[int]] = field(default_factory=lambda: {s: set() for s in SPLITS})
    split_generations: dict[str, set[int]] = field(
        default_factory=lambda: {s: set() for s in SPLITS}
    )
    split_choices: Counter[str] = field(default_factory=Counter)

    def add(self, choice: ExportChoice, pairs: int) -> None:
        self.prompts.add(choice.prompt_id)
        self.generations[choice.generation_id] = len(choice.images)
        self.users.add(choice.user_id)
        self.choices_per_prompt[choice.prompt_id] += 1
        self.choices += 1
        self.picks += choice.chosen_index is not None
        self.skips += choice.chosen_index is None
        self.pairs += pairs
        self.split_prompts[choice.split].add(choice.prompt_id)
        self.split_generations[choice.split].add(choice.generation_id)
        self.split_choices[choice.split] += 1

    def counts(self) -> dict[str, int]:
        return {
            "prompts": len(self.prompts),
            "generations": len(self.generations),
            "images": sum(self.generations.values()),
            "choices": self.choices,
            "picks": self.picks,
            "skips": self.skips,
            "users": len(self.users),
            "pairs": self.pairs,
        }


def export_dataset(
    factory: sessionmaker[Session],
    store: ImageStore,
    out_dir: Path,
    options: ExportOptions,
    *,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Export every exportable choice (see :mod:`db.export_queries`) into ``out_dir``.

    Raises FileExistsError when ``out_dir`` exists and ``overwrite`` is false, ValueError for
    an unknown format. Whatever ``progress`` raises (a cancel) stops the export and removes
    what was written.
    """
    formats = _checked_formats(options.formats)
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists() and not overwrite and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    partial = out_dir.parent / f".{out_dir.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    created_at = datetime.now(UTC)
    run = _ExportRun(partial, store, options, formats, options.cutoff or created_at)
    try:
        with factory() as session:
            facts = run.write_choices(session, progress)
        files = run.close_writers()
        counts, splits = run.tally.counts(), run.split_table()
        files += run.write_histogram_and_card(created_at, counts, splits, facts, files)
    except BaseException:
        run.abort()
        raise
    _publish(partial, out_dir)
    handled = run.tally.choices + run.skipped
    if progress is not None:
        progress(handled, handled, "export written")
    return ExportSummary(
        path=out_dir,
        created_at=created_at,
        cutoff=run.cutoff,
        formats=formats,
        license=options.license,
        counts=counts,
        splits=splits,
        files=sorted(files),
        histogram=out_dir / HISTOGRAM_FILE,
        skipped_missing_images=run.skipped,
        guild_id=options.guild_id,
        card=out_dir / "README.md",
        extra={"duel_votes": run.duel_votes},
    )


def _checked_formats(requested: tuple[str, ...]) -> list[str]:
    """The requested formats in canonical order; ValueError for unknown ones or none."""
    formats = [f for f in FORMATS if f in requested]
    unknown = sorted(set(requested) - set(FORMATS))
    if unknown or not formats:
        raise ValueError(
            f"unknown export format(s) {', '.join(unknown) or '(none given)'}; "
            f"use {', '.join(FORMATS)}"
        )
    return formats


def _publish(partial: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the finished ``partial`` folder."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)


@dataclass
class _CardFacts:
    """What the card says about consent and scope, read in the export's snapshot."""

    consent_modes: dict[str, int]
    opted_out_users: int
    pooled_guilds: list[int]


class _ExportRun:
    """One export in progress: the writers, the image reader and the running tally."""

    def __init__(
        self,
        partial: Path,
        store: ImageStore,
        options: ExportOptions,
        formats: list[str],
        cutoff: datetime,
    ) -> None:
        self.partial = partial
        self.options = options
        self.formats = formats
        self.cutoff = cutoff
        # A guild admin's export holds that guild only; the operators' spans the pooled guilds.
        guild_id = options.guild_id
        self.scope = Scope.guild(guild_id) if guild_id is not None else Scope.pooled()
        self.reader = ImageReader(store, jpeg_quality=options.jpeg_quality)
        self.pickapic = (
            PickAPicWriter(
                partial,
                rows_per_shard=options.rows_per_shard,
                row_group_rows=options.row_group_rows,
            )
            if "pickapic" in formats
            else None
        )
        self.hpd = HpdWriter(partial) if "hpd" in formats else None
        self.tally = _Tally()
        self.skipped = 0
        self.duel_rows: dict[int, int] = {}  # prompt id -> exported duel votes
        self.duel_votes = 0

    def write_choices(self, session: Session, progress: Progress | None) -> _CardFacts:
        """Stream every exportable choice of one snapshot into the writers."""
        with_skips = self.pickapic is not None  # HPD has no way to say "no preference"
        begin_snapshot(session)
        plan = plan_export(session, cutoff=self.cutoff, include_skips=with_skips, scope=self.scope)
        facts = _CardFacts(
            consent_modes=consent_modes(session, self.scope),
            pooled_guilds=pooled_guild_ids(session) if self.scope.is_pooled else [],
            opted_out_users=opted_out_users(session),
        )
        if self.pickapic is not None:
            self.duel_rows = export_duel_votes_per_prompt(
                session, scope=self.scope, cutoff=self.cutoff
            )
        total = plan.choices
        if progress is not None:
            progress(0, total, f"exporting {total:,} choices")
        choices = iter_export_choices(
            session,
            split_salt=self.options.split_salt,
            cutoff=self.cutoff,
            include_skips=with_skips,
            scope=self.scope,
        )
        for done, choice in enumerate(choices, start=1):
            if self._write_choice(choice, plan) and progress is not None:
                progress(done, total, f"{done:,}/{total:,} choices")
        if self.duel_rows:
            self._write_duel_votes(session, plan)
        return facts

    def _write_duel_votes(self, session: Session, plan: ExportPlan) -> None:
        """Every exportable arena vote, one Pick-a-Pic row each (HPD has no pairs)."""
        votes = iter_export_duel_votes(
            session, scope=self.scope, split_salt=self.options.split_salt, cutoff=self.cutoff
        )
        for vote in votes:
            self._write_duel_vote(vote, plan)

    def _write_duel_vote(self, vote: ExportDuelVote, plan: ExportPlan) -> None:
        assert self.pickapic is not None
        try:
            jpegs = {
                sha: self.reader.jpeg(sha) for sha in (vote.image_a_sha256, vote.image_b_sha256)
            }
        except BlobNotFound:
            self.skipped += 1
            return
        context = PairContext(
            pseudonym(self.options.user_salt, "user", vote.user_id),
            pseudonym(self.options.user_salt, "duel", vote.duel_id),
            self._rows_of_prompt(vote.prompt_id, plan),
        )
        self.tally.pairs += self.pickapic.add_duel_vote(vote, jpegs.__getitem__, context)
        self.duel_votes += 1

    def _rows_of_prompt(self, prompt_id: int, plan: ExportPlan) -> int:
        """Pick-a-Pic rows of one prompt: its choices' pairs and its duel votes."""
        stats = plan.prompts.get(prompt_id)
        return (stats.pair_rows if stats else 0) + self.duel_rows.get(prompt_id, 0)

    def _write_choice(self, choice: ExportChoice, plan: ExportPlan) -> bool:
        """Write one choice whole; False when one of its images has gone."""
        try:  # read every image first: a choice is written whole or not at all
            pngs = {image.sha256: self.reader.png(image.sha256) for image in choice.images}
            jpegs = (
                {sha: self.reader.jpeg(sha) for sha in pngs} if self.pickapic is not None else {}
            )
        except BlobNotFound:
            self.skipped += 1  # deleted while we were exporting (a forget-me, a deletion)
            return False
        user_uid = pseudonym(self.options.user_salt, "user", choice.user_id)
        generation_uid = pseudonym(self.options.user_salt, "generation", choice.generation_id)
        pairs = 0
        if self.pickapic is not None:
            pairs = self.pickapic.add_choice(
                choice,
                jpegs.__getitem__,
                PairContext(user_uid, generation_uid, self._rows_of_prompt(choice.prompt_id, plan)),
            )
        if self.hpd is not None:
            self.hpd.add_choice(
                choice, pngs.__getitem__, user_uid=user_uid, generation_uid=generation_uid
            )
        self.tally.add(choice, pairs)
        return True

    def close_writers(self) -> list[str]:
        """Finish the writers; the files they wrote, relative to the export folder."""
        files: list[str] = []
        if self.pickapic is not None:
            for shards in self.pickapic.close().values():
                files += [str(path.relative_to(self.partial)) for path in shards]
        if self.hpd is not None:
            files += [str(path.relative_to(self.partial)) for path in self.hpd.close()]
            files.append(f"hpd/images/ ({self.hpd.images_written:,} PNG files)")
        return files

    def split_table(self) -> dict[str, dict[str, int]]:
        """Per split: prompts, generations, choices and rows written in each format."""
        return _split_table(self.tally, self.pickapic, self.hpd)

    def write_histogram_and_card(
        self,
        created_at: datetime,
        counts: dict[str, int],
        splits: dict[str, dict[str, int]],
        facts: _CardFacts,
        files: list[str],
    ) -> list[str]:
        """Write the histogram and the dataset card; the two file names."""
        tally = self.tally
        png = histogram_png(tally.choices_per_prompt.values(), list(tally.generations.values()))
        (self.partial / HISTOGRAM_FILE).write_bytes(png)
        written = [HISTOGRAM_FILE, "README.md"]
        card = CardInfo(
            name=self.options.name,
            license=self.options.license,
            created_at=created_at,
            cutoff=self.cutoff,
            formats=self.formats,
            counts=counts,
            splits=splits,
            consent_modes=facts.consent_modes,
            opted_out_users=facts.opted_out_users,
            files=sorted(files + written),
        )
        if self.options.guild_id is not None:
            card.scope = "the generations of one Discord server"
        else:
            card.scope = pooled_scope_text(facts.pooled_guilds)
        (self.partial / "README.md").write_text(render_card(card), encoding="utf-8")
        return written

    def abort(self) -> None:
        """Drop everything written so far."""
        if self.pickapic is not None:
            self.pickapic.abort()
        if self.hpd is not None:
            self.hpd.abort()
        shutil.rmtree(self.partial, ignore_errors=True)


def _split_table(
    tally: _Tally, pickapic: PickAPicWriter | None, hpd: HpdWriter | None
) -> dict[str, dict[str, int]]:
    rows = pickapic.rows_per_split() if pickapic is not None else {}
    hpd_counts = hpd.counts() if hpd is not None else {"v1": {}, "v2": {}}
    return {
        split: {
            "prompts": len(tally.split_prompts[split]),
            "generations": len(tally.split_generations[split]),
            "choices": tally.split_choices[split],
            "pairs": rows.get(split, 0),
            "hpd_v1": hpd_counts["v1"].get(split, 0),
            "hpd_v2": hpd_counts["v2"].get(split, 0),
        }
        for split in SPLITS
    }
