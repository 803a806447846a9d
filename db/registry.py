"""The model registry: versions of HPS models and LoRAs, each a guild's or global, at most one
active per kind and guild (enforced by a partial unique index); a guild uses its own active
version, else the global one. Promotion and retirement happen in one transaction, within the
promoting scope only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from db.errors import DomainError
from db.models import ModelKind, ModelStatus, ModelVersion, utcnow
from db.scope import Scope


class ModelNotFound(DomainError):
    code = "model_not_found"


def register_model_version(
    session: Session,
    *,
    kind: ModelKind,
    name: str,
    checkpoint_key: str,
    architecture: str,
    metrics: dict[str, Any] | None = None,
    trained_on: dict[str, Any] | None = None,
    checkpoint_sha256: str | None = None,
    guild_id: int | None = None,
) -> ModelVersion:
    """Add a candidate version (flushed, so ``id`` is set), of ``guild_id`` or global (None).

    ``checkpoint_sha256`` is the sha256 (hex) of the checkpoint file as registered (for a LoRA,
    of its weights file); workers verify the file against it before loading it, so a swapped
    or corrupted file is refused. None (older rows) skips that check.
    """
    if checkpoint_sha256 is not None:
        digest = checkpoint_sha256.strip().lower()
        if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
            raise ValueError(f"checkpoint_sha256 is not a sha256: {checkpoint_sha256!r}")
        checkpoint_sha256 = digest
    version = ModelVersion(
        kind=kind,
        guild_id=guild_id,
        name=name,
        checkpoint_key=checkpoint_key,
        architecture=architecture,
        status=ModelStatus.candidate,
        metrics=metrics or {},
        trained_on=trained_on or {},
        checkpoint_sha256=checkpoint_sha256,
        created_at=utcnow(),
    )
    session.add(version)
    session.flush()
    return version


def get_model_version(session: Session, version_id: int) -> ModelVersion:
    """A version by id; raise ModelNotFound."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise ModelNotFound(f"no model version {version_id}")
    return version


def get_active_model(
    session: Session, kind: ModelKind, guild_id: int | None = None
) -> ModelVersion | None:
    """The version of ``kind`` that ``guild_id`` uses: its own active one, else the global
    active one (``guild_id`` None: the global one only)."""
    scope = Scope.pooled() if guild_id is None else Scope.guild(guild_id)
    own_first = case((ModelVersion.guild_id.is_(None), 1), else_=0)
    return session.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.kind == kind,
            ModelVersion.status == ModelStatus.active,
            scope.may_use_model(),
        )
        .order_by(own_first)
        .limit(1)
    )


def get_usable_model_version(session: Session, scope: Scope, version_id: int) -> ModelVersion:
    """A version ``scope`` may use (:meth:`Scope.may_use_model`); ModelNotFound for another
    guild's, worded like a missing one."""
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.id == version_id, scope.may_use_model())
    )
    if version is None:
        raise ModelNotFound(f"no model version {version_id} {_where(scope)}")
    return version


def promote_model_version(
    session: Session, version_id: int, scope: Scope | None = None
) -> ModelVersion:
    """Make ``version_id`` the active one of its kind for its guild (or globally); the
    previous active one there is retired, nothing elsewhere changes. With ``scope``, only a
    version that scope owns may be promoted (ModelNotFound otherwise). The version's row is
    locked first, so concurrent promotions serialise."""
    query = select(ModelVersion).where(ModelVersion.id == version_id)
    if scope is not None:
        query = query.where(scope.owns_model())
    version = session.scalar(query.with_for_update())
    if version is None:
        where = "" if scope is None else f" {_where(scope)}"
        raise ModelNotFound(f"no model version {version_id}{where}")
    if version.status == ModelStatus.active:
        return version
    session.execute(
        update(ModelVersion)
        .where(
            ModelVersion.kind == version.kind,
            ModelVersion.status == ModelStatus.active,
            ModelVersion.guild_id.is_not_distinct_from(version.guild_id),
        )
        .values(status=ModelStatus.retired)
    )
    session.flush()
    version.status = ModelStatus.active
    version.promoted_at = utcnow()
    session.flush()
    return version


def list_model_versions(
    session: Session, kind: ModelKind | None = None, scope: Scope | None = None
) -> list[ModelVersion]:
    """All versions (or those ``scope`` owns), newest first."""
    query = select(ModelVersion).order_by(ModelVersion.id.desc())
    if kind is not None:
        query = query.where(ModelVersion.kind == kind)
    if scope is not None:
        query = query.where(scope.owns_model())
    return list(session.scalars(query))


def _where(scope: Scope) -> str:
    return "among the global models" if scope.is_pooled else "in this server"
