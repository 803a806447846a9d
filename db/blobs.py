"""Blobs of the image store that no image row needs any more."""

from __future__ import annotations

import asyncio
from functools import partial

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.engine import run_transaction_async
from db.privacy import blob_in_use
from media.store import ImageStore


async def purge_unreferenced(
    factory: async_sessionmaker[AsyncSession], store: ImageStore, shas: list[str]
) -> int:
    """Delete the blobs no image row references now (re-checked after the deleting commit);
    return how many were removed."""
    removed = 0
    loop = asyncio.get_running_loop()
    for sha in shas:
        if not await run_transaction_async(factory, partial(blob_in_use, sha256=sha)):
            removed += int(await loop.run_in_executor(None, store.delete, sha))
    return removed
