"""From a parsed generator message to stored rows: download the attachments safely, run the
image intake (in an intake process), store blobs, record the generation idempotently."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
from collections.abc import AsyncIterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.downloads import DownloadRefused, download_attachment
from bot.harvesting.adapters.base import ParsedChoice, ParsedGeneration
from config import Settings
from db.blobs import purge_unreferenced
from db.engine import run_transaction_async
from db.errors import DomainError
from db.ingest import (
    ChoiceIn,
    GenerationIn,
    ImageIn,
    harvest_precheck,
    reaction_choice_exists,
    record_choice,
    record_generation,
    sync_reaction_choice,
)
from db.models import ChoiceMethod
from db.privacy import delete_by_message_ids
from media.image_set import intake_and_store_set
from media.intake import ImageRejected
from media.model_inputs import parse_model_inputs
from media.store import ImageStore

log = logging.getLogger(__name__)
CONCURRENT_GENERATIONS = 16
MAX_INTAKE_PROCESSES = 4


async def start_intake_pool() -> ProcessPoolExecutor:
    """The processes that decode attachments (CPU work that holds the GIL for much of its
    time), started now rather than on the first message: spawning takes seconds."""
    pool = ProcessPoolExecutor(
        max_workers=max(1, min(MAX_INTAKE_PROCESSES, os.cpu_count() or 1)),
        mp_context=multiprocessing.get_context("spawn"),
    )
    loop = asyncio.get_running_loop()
    await asyncio.gather(
        *(loop.run_in_executor(pool, os.getpid) for _ in range(os.cpu_count() or 1))
    )
    return pool


@dataclass(frozen=True)
class HarvestOutcome:
    """What storing one generation came to."""

    stored: bool
    reason: str = ""
    generation_id: int | None = None
    new: bool = True
    temporary: bool = False  # worth trying again later (a timeout, a CDN error)


class Harvester:
    """Stores what adapters parsed: generations with their images, picks, deletions.
    Refusals (consent, bad images, unknown generations) are logged and counted, not raised."""

    def __init__(
        self,
        settings: Settings,
        factory: async_sessionmaker[AsyncSession],
        store: ImageStore,
        http: aiohttp.ClientSession,
    ) -> None:
        self.settings = settings
        self.factory = factory
        self.store = store
        self.http = http
        # Decoding is CPU work that holds the GIL for much of its time: processes, not threads.
        self.intake_pool: Executor | None = None
        # Generations being downloaded and stored, by message id: a pick that arrives
        # meanwhile (a quick reaction, an upscale right after its grid) waits for them.
        self._in_flight: dict[int, asyncio.Event] = {}
        # Bounded downloads + intake: an event storm or a backfill must not hold hundreds of
        # attachment sets (up to MAX_IMAGE_BYTES each) in memory at once.
        self._slots = asyncio.Semaphore(CONCURRENT_GENERATIONS)

    async def _images(self, parsed: ParsedGeneration) -> list[ImageIn]:
        settings = self.settings
        raws = await asyncio.gather(
            *(
                download_attachment(self.http, settings, attachment.url, attachment.size)
                for attachment in parsed.attachments
            )
        )
        job = partial(
            intake_and_store_set,
            list(raws),
            grid=parsed.split_grid,
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            storage_url=settings.storage_url,
            s3_endpoint_url=settings.s3_endpoint_url,
            model_inputs=parse_model_inputs(settings.model_inputs),
        )
        described = await asyncio.get_running_loop().run_in_executor(self.intake_pool, job)
        return [
            ImageIn(image.sha256, image.storage_key, image.width, image.height, image.phash)
            for image in described
        ]

    async def generation(
        self,
        parsed: ParsedGeneration,
        *,
        message_id: int,
        channel_id: int,
        guild_id: int | None,
        generator: str,
    ) -> HarvestOutcome:
        """Store one generation; refusals are reported, never raised."""
        existing, allowed = await run_transaction_async(
            self.factory,
            partial(
                harvest_precheck,
                message_id=message_id,
                user_id=parsed.requester_id,
                guild_id=guild_id,
            ),
        )
        if existing is not None:  # a replay, or a backfill over known ground: no download
            return HarvestOutcome(True, "already stored", existing, new=False)
        if not allowed:
            return HarvestOutcome(False, "the requester did not consent to harvesting")
        images: list[ImageIn] = []
        try:
            async with self._slots:
                images = await self._images(parsed)
            recorded = await run_transaction_async(
                self.factory,
                lambda session: record_generation(
                    session,
                    GenerationIn(
                        source_message_id=message_id,
                        channel_id=channel_id,
                        guild_id=guild_id,
                        prompt=parsed.prompt,
                        generator=generator,
                        images=images,
                        requester_id=parsed.requester_id,
                        params=parsed.params,
                    ),
                ),
            )
        except (DownloadRefused, ImageRejected, DomainError) as exc:
            metrics.count_error(exc)
            log.info("message %s not harvested: %s", message_id, exc)
            await self._purge([image.sha256 for image in images])  # e.g. opted out meanwhile
            temporary = isinstance(exc, DownloadRefused) and exc.temporary
            return HarvestOutcome(False, str(exc), temporary=temporary)
        return HarvestOutcome(True, generation_id=recorded.generation_id)

    @contextlib.asynccontextmanager
    async def tracking(self, message_id: int) -> AsyncIterator[None]:
        """Mark ``message_id`` as being harvested for the duration (the same message twice
        at once, as with a replayed event, waits for the first)."""
        while message_id in self._in_flight:
            await self._in_flight[message_id].wait()
        done = self._in_flight[message_id] = asyncio.Event()
        try:
            yield
        finally:
            done.set()
            del self._in_flight[message_id]

    async def settled(self, message_id: int) -> None:
        """Wait while the generation of ``message_id`` is being stored (if it is)."""
        pending = self._in_flight.get(message_id)
        if pending is not None:
            with contextlib.suppress(TimeoutError):  # then the caller finds no generation
                await asyncio.wait_for(pending.wait(), self.settings.download_timeout_s + 30)

    async def choice(self, parsed: ParsedChoice) -> bool:
        """Record a pick; False when it was refused (unknown generation, opted out, ...)."""
        await self.settled(parsed.generation_message_id)
        try:
            await run_transaction_async(
                self.factory,
                lambda session: record_choice(
                    session,
                    ChoiceIn(
                        user_id=parsed.user_id,
                        position=parsed.position,
                        method=parsed.method,
                        generation_message_id=parsed.generation_message_id,
                        choice_message_id=parsed.choice_message_id,
                    ),
                ),
            )
        except DomainError as exc:
            metrics.count_error(exc)
            log.info("choice on %s not recorded: %s", parsed.generation_message_id, exc)
            return False
        metrics.count_choice(parsed.method)
        return True

    async def has_reaction_pick(self, message_id: int, user_id: int) -> bool:
        """Whether ``user_id`` has a pick made by reaction stored on ``message_id``."""
        return await run_transaction_async(
            self.factory,
            partial(reaction_choice_exists, generation_message_id=message_id, user_id=user_id),
        )

    async def reaction_pick(self, message_id: int, user_id: int, positions: list[int]) -> bool:
        """Make ``user_id``'s reaction pick on ``message_id`` match the number reactions they
        have on it now (none: the pick is withdrawn). True if a pick is stored afterwards."""
        await self.settled(message_id)
        try:
            choice_id = await run_transaction_async(
                self.factory,
                partial(
                    sync_reaction_choice,
                    generation_message_id=message_id,
                    user_id=user_id,
                    positions=positions,
                ),
            )
        except DomainError as exc:
            metrics.count_error(exc)
            log.info("reaction pick on %s not recorded: %s", message_id, exc)
            return False
        if choice_id is not None and positions:
            metrics.count_choice(ChoiceMethod.reaction)
        return choice_id is not None

    async def deleted(self, message_ids: list[int]) -> None:
        """Remove what deleted messages held, then the blobs nothing else needs (re-checked
        after the commit, in case the same bytes arrived again meanwhile)."""
        orphans = await run_transaction_async(
            self.factory, lambda session: delete_by_message_ids(session, message_ids)
        )
        await self._purge(orphans)

    async def _purge(self, shas: list[str]) -> None:
        await purge_unreferenced(self.factory, self.store, shas)
