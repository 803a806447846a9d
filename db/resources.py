"""The shared resources of every process (bot, worker, CLI): the database engine, its session
factory and the image store, built from one Settings object on first use.

Built lazily, so a process that forks (a Celery prefork worker) creates them after the fork; a
process ends with :meth:`Resources.dispose`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from db.engine import make_engine, make_session_factory
from media.store import LocalImageStore, S3ImageStore, open_store


@dataclass
class Resources:
    """Engine, session factory and image store of one process, made from ``settings``."""

    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        """The synchronous database engine (pooled, pre-ping)."""
        return make_engine(self.settings.database_url)

    @cached_property
    def factory(self) -> sessionmaker[Session]:
        """Session factory bound to :attr:`engine`."""
        return make_session_factory(self.engine)

    @cached_property
    def store(self) -> LocalImageStore | S3ImageStore:
        """The content-addressed image store the settings name (local folder or S3)."""
        return open_store(self.settings.storage_url, s3_endpoint_url=self.settings.s3_endpoint_url)

    def dispose(self, *, close: bool = True) -> None:
        """Release the engine's connections if it was built (``close=False`` after a fork:
        drop inherited connections without closing the parent's sockets)."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=close)
