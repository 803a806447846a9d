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
again unless another row uses them. Records are written in batches (one lookup of the
existing generations, one transaction per batch); a batch refused by a domain rule is written
again one record per transaction, so only the offending record is left out. A bad record
stops the import with a message naming it (records before it stay imported; run again after
fixing the file), or is skipped and listed with ``skip_invalid``.

A batch is also bounded in bytes: it is written once the images it holds (parquet cells, and
the canonical PNGs the intake made of them) reach ``BATCH_IMAGE_BYTES``, so an import of large
images holds a few of them at a time, not 64 records' worth. An image over
``max_image_bytes`` is refused by its size before it is read, hashed or decoded.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
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
    resolve_generation_id,
)
from db.models import Choice, ChoiceMethod, Generation, Image
from db.privacy import purge_orphan_blobs
from exchange.ids import imported_id
from exchange.readers import ImportFormatError, ImportRecord, RowNote, Source, open_source
from media.intake import ImageRejected, IntakeResult, intake_image
from media.store import ImageStore, key_for

log = logging.getLogger(__name__)

BATCH_RECORDS = 64
BATCH_IMAGE_BYTES = 16 * 2**20  # image bytes a batch may hold before it is written
KNOWN_GENERATIONS_CACHE = 50_000

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
    importer = _Importer(factory, store, options)
    for path in paths:
        source = open_source(
            Path(path), options.fmt, options.image_root, max_image_bytes=options.max_image_bytes
        )
        importer.run(source, progress)
    return importer.summary


def user_id_for(record: ImportRecord, namespace: str, occurrence: int) -> int:
    """The (negative) user id of a record's chooser."""
    if record.user_key is not None:
        return imported_id("user", namespace, record.user_key)
    key = f"record\x1f{record.generation_key}\x1f{record.chosen_index}\x1f{occurrence}"
    return imported_id("user", namespace, key)


@dataclass
class _Pending:
    """A checked record waiting for its transaction. ``images`` is None when its generation
    exists already (or an earlier record of the same batch creates it)."""

    record: ImportRecord  # without its images (their bytes are not kept)
    image_count: int
    namespace: str
    source_id: int
    user_id: int
    images: list[IntakeResult] | None


@dataclass(frozen=True)
class _Written:
    source_id: int
    generation_id: int
    images: int
    generation_added: bool
    choice_added: bool


class _Importer:
    """Records are checked and written in batches: one query finds which generations exist,
    images are taken in, then one transaction writes the batch. If that transaction is refused
    by a domain rule, the batch is written again one record per transaction, so that only the
    offending record is left out."""

    def __init__(
        self, factory: sessionmaker[Session], store: ImageStore, options: ImportOptions
    ) -> None:
        self.factory = factory
        self.store = store
        self.options = options
        self.summary = ImportSummary(dry_run=options.dry_run)
        self.known: OrderedDict[int, tuple[int, int]] = OrderedDict()  # source id -> (id, n)

    def run(self, source: Source, progress: Progress | None) -> None:
        namespace = self.options.namespace or source.format
        self.summary.files.append(str(source.path))
        occurrences: Counter[str] = Counter()
        batch: list[tuple[ImportRecord, int, int]] = []
        held = 0  # image bytes the batch's records keep in memory
        name = source.path.name
        if progress is not None:
            progress(0, source.total, name)
        for done, entry in enumerate(source.records(), start=1):
            if isinstance(entry, RowNote):
                self.summary.unlabeled_rows += entry is RowNote.UNLABELED
            elif isinstance(entry, ImportFormatError):
                self._flush(batch, namespace)  # the records before it are imported first
                batch, held = [], 0
                self._refuse(entry)
            else:
                occurrence = 0
                if entry.user_key is None:  # identical records: different anonymous choosers
                    identity = f"{entry.generation_key}\x1f{entry.chosen_index}"
                    occurrence = occurrences[identity]
                    occurrences[identity] += 1
                source_id = imported_id("generation", namespace, entry.generation_key)
                batch.append((entry, source_id, user_id_for(entry, namespace, occurrence)))
                held += sum(image.held_bytes for image in entry.images)
                del entry  # the batch alone holds the record: _flush lets go of its images
                if len(batch) >= BATCH_RECORDS or held >= BATCH_IMAGE_BYTES:
                    self._flush(batch, namespace)
                    batch, held = [], 0
            if progress is not None:
                progress(done, source.total, name)
        self._flush(batch, namespace)

    def _refuse(self, error: ImportFormatError) -> None:
        if not self.options.skip_invalid:
            raise error
        self.summary.invalid.append(str(error))
        log.warning("skipped: %s", error)

    def _remember(self, source_id: int, generation_id: int, images: int) -> None:
        self.known[source_id] = (generation_id, images)
        self.known.move_to_end(source_id)
        while len(self.known) > KNOWN_GENERATIONS_CACHE:
            self.known.popitem(last=False)

    def _look_up(self, source_ids: set[int]) -> None:
        unknown = [source_id for source_id in source_ids if source_id not in self.known]
        if not unknown:
            return
        query = (
            select(Generation.source_message_id, Generation.id, func.count(Image.id))
            .outerjoin(Image, Image.generation_id == Generation.id)
            .where(Generation.source_message_id.in_(unknown))
            .group_by(Generation.id)
        )
        rows = run_transaction(self.factory, lambda session: session.execute(query).all())
        for source_id, generation_id, images in rows:
            self._remember(int(source_id), int(generation_id), int(images))

    def _flush(self, batch: list[tuple[ImportRecord, int, int]], namespace: str) -> None:
        """Check, take in and write the records of ``batch``, emptying it as it goes: a
        record's source images are let go once taken in, before the next is read."""
        if not batch:
            return
        self._look_up({source_id for _, source_id, _ in batch})
        batch.reverse()
        prepared: list[_Pending] = []
        creators: dict[int, int] = {}  # source id -> number of images of the record making it
        held = 0  # bytes of the canonical images in ``prepared``
        while batch:
            source_record, source_id, user_id = batch.pop()
            record = replace(source_record, images=())  # what the writes need: no image bytes
            count = len(source_record.images)
            try:
                known = self.known.get(source_id)
                expected = known[1] if known is not None else creators.get(source_id)
                if expected is not None and expected != count:
                    raise ImportFormatError(
                        f"{record.where}: generation {record.generation_key!r} has {expected} "
                        f"images; this record has {count}"
                    )
                images = None
                if expected is None:
                    images = self._intake(source_record)
                    creators[source_id] = len(images)
                    held += sum(len(result.data) for result in images)
                del source_record
                prepared.append(_Pending(record, count, namespace, source_id, user_id, images))
            except ImportFormatError as exc:
                del source_record  # raised before it was let go
                self._write(prepared)
                prepared, creators, held = [], {}, 0
                self._refuse(exc)
                continue
            if held >= BATCH_IMAGE_BYTES:  # large images: write what is ready, then go on
                self._write(prepared)
                prepared, held = [], 0
        self._write(prepared)

    def _intake(self, record: ImportRecord) -> list[IntakeResult]:
        results = []
        max_bytes, max_pixels = self.options.max_image_bytes, self.options.max_image_pixels
        for number, image in enumerate(record.images, start=1):
            try:
                raw = image.read(max_bytes)
                results.append(intake_image(raw, max_bytes=max_bytes, max_pixels=max_pixels))
                del raw  # before the next image is read
            except ImageRejected as exc:
                raise ImportFormatError(
                    f"{record.where}: image {number} ({image.key}) refused: {exc}"
                ) from None
            except OSError as exc:
                raise ImportFormatError(
                    f"{record.where}: image {number} ({image.key}) unreadable: {exc}"
                ) from None
        self.summary.images_checked += len(results)
        return results

    def _write(self, prepared: list[_Pending]) -> None:
        if not prepared:
            return
        if self.options.dry_run:
            self._count_records(prepared)
            return
        new_blobs: dict[int, set[str]] = {}  # per record: blobs it added (removed on failure)
        for index, pending in enumerate(prepared):
            for result in pending.images or ():
                if not self.store.exists(result.sha256):
                    new_blobs.setdefault(index, set()).add(result.sha256)
                    self.store.put(result.data, result.sha256)
        try:
            written = run_transaction(
                self.factory, lambda session: self._write_all(session, prepared)
            )
        except DomainError:
            self._write_one_by_one(prepared, new_blobs)
            return
        except BaseException:
            purge_orphan_blobs(self.factory, self.store, set().union(*new_blobs.values()))
            raise
        self._apply(prepared, written)

    def _write_one_by_one(self, prepared: list[_Pending], new_blobs: dict[int, set[str]]) -> None:
        for index, pending in enumerate(prepared):
            try:
                written = run_transaction(
                    self.factory, partial(self._write_all, prepared=[pending])
                )
            except DomainError as exc:
                purge_orphan_blobs(self.factory, self.store, new_blobs.get(index, set()))
                self._refuse(ImportFormatError(f"{pending.record.where}: {exc}"))
                continue
            self._apply([pending], written)

    def _write_all(self, session: Session, prepared: list[_Pending]) -> list[_Written]:
        made: dict[int, int] = {}  # generations made in this transaction: source id -> id
        return [self._write_record(session, pending, made) for pending in prepared]

    def _write_record(self, session: Session, pending: _Pending, made: dict[int, int]) -> _Written:
        record = pending.record
        generation_added = False
        if pending.images is not None:
            generation_id = record_generation(
                session,
                GenerationIn(
                    source_message_id=pending.source_id,
                    channel_id=imported_id("channel", pending.namespace, "import"),
                    prompt=record.prompt,
                    generator=record.generator,
                    images=[
                        ImageIn(r.sha256, key_for(r.sha256), r.width, r.height, r.phash)
                        for r in pending.images
                    ],
                    params={"imported_from": pending.namespace, **record.params},
                    created_at=record.created_at,
                ),
            ).generation_id
            generation_added = True  # it did not exist when the batch was looked up
        elif pending.source_id in made:
            generation_id = made[pending.source_id]
        else:
            generation_id = resolve_generation_id(session, None, pending.source_id)
        made[pending.source_id] = generation_id
        present = session.scalar(
            select(Choice.id).where(
                Choice.generation_id == generation_id, Choice.user_id == pending.user_id
            )
        )
        if present is None or record.created_at is not None:  # else the stored pick stands
            record_choice(
                session,
                ChoiceIn(
                    user_id=pending.user_id,
                    position=record.chosen_index,
                    method=ChoiceMethod.import_,
                    generation_id=generation_id,
                    at=record.created_at,
                ),
            )
        return _Written(
            pending.source_id,
            generation_id,
            pending.image_count,
            generation_added,
            present is None,
        )

    def _count_records(self, prepared: list[_Pending]) -> None:
        self.summary.records += len(prepared)
        self.summary.ties += sum(1 for p in prepared if p.record.chosen_index is None)

    def _apply(self, prepared: list[_Pending], written: list[_Written]) -> None:
        self._count_records(prepared)
        for result in written:
            self._remember(result.source_id, result.generation_id, result.images)
            self.summary.generations_added += result.generation_added
            if result.choice_added:
                self.summary.choices_added += 1
            else:
                self.summary.choices_present += 1
