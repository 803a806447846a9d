"""Import public preference data (HPD v1/v2 JSON, Pick-a-Pic parquet) into the database.

Each record becomes a prompt, a generation with its images (every image through the safe
intake of :mod:`media.intake`, stored content-addressed) and one choice, through the same
idempotent operations the bot uses (:mod:`db.ingest`). Ids are deterministic (see
:mod:`exchange.ids`): a generation's ``source_message_id`` is
``imported_id("generation", namespace, <generation key>)`` where the key is the source's
``generation_uid`` when it has one, else the prompt and the image paths (HPD) or image uids
(Pick-a-Pic); a user is ``imported_id("user", namespace, <source user id>)``, or, for sources
without user ids, one synthetic user per record (keyed by the generation, the pick and the
number of identical records before it); all imported generations sit in the channel
``imported_id("channel", namespace, "import")`` with no guild. So importing the same file
twice changes nothing, and imported rows never collide with Discord ids (always positive).

A record is imported whole or not at all: it is validated and every image passes the intake
before its transaction starts; blobs stored for a record whose transaction failed are removed
again unless another row uses them. A bad record stops the import with a message naming it
(records before it stay imported; run again after fixing the file), or is skipped and listed
with ``skip_invalid``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.engine import run_transaction
from db.errors import DomainError
from db.ingest import (
    ChoiceIn,
    GenerationIn,
    ImageIn,
    record_choice,
    record_generation,
)
from db.models import Choice, ChoiceMethod, Generation, Image
from db.privacy import purge_orphan_blobs
from exchange.ids import imported_id
from exchange.readers import ImportFormatError, ImportRecord, RowNote, open_source
from media.intake import ImageRejected, IntakeResult, intake_image
from media.store import ImageStore, key_for

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
"""``progress(done, total, message)`` per file, in the file's units (records or rows)."""


@dataclass
class ImportOptions:
    """How to import."""

    max_image_bytes: int
    max_image_pixels: int
    fmt: str = "auto"
    namespace: str | None = None  # default: the format's name ("hpd", "pickapic")
    image_root: Path | None = None
    skip_invalid: bool = False
    dry_run: bool = False


@dataclass
class ImportSummary:
    """What an import did."""

    files: list[str] = field(default_factory=list)
    records: int = 0
    choices_added: int = 0
    choices_present: int = 0
    generations_added: int = 0
    images_checked: int = 0
    ties: int = 0
    unlabeled_rows: int = 0
    invalid: list[str] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return asdict(self)


def import_files(
    factory: sessionmaker[Session],
    store: ImageStore,
    paths: Iterable[Path],
    options: ImportOptions,
    *,
    progress: Progress | None = None,
) -> ImportSummary:
    """Import every record of every file; return the counts. Raises ImportFormatError for a
    bad file, or for a bad record unless ``options.skip_invalid``."""
    summary = ImportSummary(dry_run=options.dry_run)
    for path in paths:
        source = open_source(Path(path), options.fmt, options.image_root)
        namespace = options.namespace or source.format
        summary.files.append(str(source.path))
        occurrences: Counter[str] = Counter()
        if progress is not None:
            progress(0, source.total, f"{source.path.name}: 0/{source.total} {source.unit}")
        for done, entry in enumerate(source.records(), start=1):
            if isinstance(entry, RowNote):
                summary.unlabeled_rows += entry is RowNote.UNLABELED
            elif isinstance(entry, ImportFormatError):
                _refuse(entry, options, summary)
            else:
                try:
                    _import_record(factory, store, entry, namespace, occurrences, options, summary)
                except ImportFormatError as exc:
                    _refuse(exc, options, summary)
            if progress is not None:
                progress(done, source.total, f"{source.path.name}")
    return summary


def _refuse(error: ImportFormatError, options: ImportOptions, summary: ImportSummary) -> None:
    if not options.skip_invalid:
        raise error
    summary.invalid.append(str(error))
    log.warning("skipped: %s", error)


def user_id_for(record: ImportRecord, namespace: str, occurrence: int) -> int:
    """The (negative) user id of a record's chooser."""
    if record.user_key is not None:
        return imported_id("user", namespace, record.user_key)
    key = f"record\x1f{record.generation_key}\x1f{record.chosen_index}\x1f{occurrence}"
    return imported_id("user", namespace, key)


def _existing_generation(session: Session, source_id: int) -> tuple[int, int] | None:
    row = session.execute(
        select(Generation.id, func.count(Image.id))
        .outerjoin(Image, Image.generation_id == Generation.id)
        .where(Generation.source_message_id == source_id)
        .group_by(Generation.id)
    ).one_or_none()
    return None if row is None else (int(row[0]), int(row[1]))


def _intake(record: ImportRecord, options: ImportOptions) -> list[IntakeResult]:
    results = []
    for number, image in enumerate(record.images, start=1):
        try:
            raw = image.read(options.max_image_bytes)
            results.append(
                intake_image(
                    raw, max_bytes=options.max_image_bytes, max_pixels=options.max_image_pixels
                )
            )
        except ImageRejected as exc:
            raise ImportFormatError(
                f"{record.where}: image {number} ({image.key}) refused: {exc}"
            ) from None
        except OSError as exc:
            raise ImportFormatError(
                f"{record.where}: image {number} ({image.key}) unreadable: {exc}"
            ) from None
    return results


def _import_record(
    factory: sessionmaker[Session],
    store: ImageStore,
    record: ImportRecord,
    namespace: str,
    occurrences: Counter[str],
    options: ImportOptions,
    summary: ImportSummary,
) -> None:
    occurrence = 0
    if record.user_key is None:  # identical records are different anonymous choosers
        identity = f"{record.generation_key}\x1f{record.chosen_index}"
        occurrence = occurrences[identity]
        occurrences[identity] += 1
    source_id = imported_id("generation", namespace, record.generation_key)
    user_id = user_id_for(record, namespace, occurrence)
    existing = run_transaction(factory, lambda session: _existing_generation(session, source_id))
    if existing is not None and existing[1] != len(record.images):
        raise ImportFormatError(
            f"{record.where}: generation {record.generation_key!r} was imported with "
            f"{existing[1]} images; this record has {len(record.images)}"
        )
    stored: list[IntakeResult] = []
    if existing is None:
        stored = _intake(record, options)
        summary.images_checked += len(stored)
    summary.records += 1
    summary.ties += record.chosen_index is None
    if options.dry_run:
        return
    new_blobs = set()  # blobs this record added: the only ones to remove if it fails
    for result in stored:
        if result.sha256 not in new_blobs and not store.exists(result.sha256):
            new_blobs.add(result.sha256)
        store.put(result.data, result.sha256)

    def write(session: Session) -> tuple[bool, bool]:
        generation_added = False
        if existing is None:
            before = session.scalar(
                select(Generation.id).where(Generation.source_message_id == source_id)
            )
            generation_id = record_generation(
                session,
                GenerationIn(
                    source_message_id=source_id,
                    channel_id=imported_id("channel", namespace, "import"),
                    prompt=record.prompt,
                    generator=record.generator,
                    images=[
                        ImageIn(r.sha256, key_for(r.sha256), r.width, r.height, r.phash)
                        for r in stored
                    ],
                    params={"imported_from": namespace, **record.params},
                    created_at=record.created_at,
                ),
            ).generation_id
            generation_added = before is None
        else:
            generation_id = existing[0]
        present = session.scalar(
            select(Choice.id).where(
                Choice.generation_id == generation_id, Choice.user_id == user_id
            )
        )
        if present is not None and record.created_at is None:
            return generation_added, False  # no time to order by: the stored pick stands
        record_choice(
            session,
            ChoiceIn(
                user_id=user_id,
                position=record.chosen_index,
                method=ChoiceMethod.import_,
                generation_id=generation_id,
                at=record.created_at,
            ),
        )
        return generation_added, present is None

    try:
        generation_added, choice_added = run_transaction(factory, write)
    except DomainError as exc:
        purge_orphan_blobs(factory, store, new_blobs)
        raise ImportFormatError(f"{record.where}: {exc}") from None
    except BaseException:
        purge_orphan_blobs(factory, store, new_blobs)
        raise
    summary.generations_added += generation_added
    if choice_added:
        summary.choices_added += 1
    else:
        summary.choices_present += 1
