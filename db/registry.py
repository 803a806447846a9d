"""The model registry: versions of HPS models and LoRAs, at most one active per kind
(enforced by a partial unique index), promotion and retirement in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.errors import DomainError
from db.models import ModelKind, ModelStatus, ModelVersion, utcnow


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
) -> ModelVersion:
    """Add a candidate version (flushed, so ``id`` is set).

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


def get_active_model(session: Session, kind: ModelKind) -> ModelVersion | None:
    """The active version of ``kind``, if any."""
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.kind == kind, ModelVersion.status == ModelStatus.active
        )
    )


def promote_model_version(session: Session, version_id: int) -> ModelVersion:
    """Make ``version_id`` the active one of its kind; the previous active one is retired.
    The kind's active row is locked first, so concurrent promotions serialise."""
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.id == version_id).with_for_update()
    )
    if version is None:
        raise ModelNotFound(f"no model version {version_id}")
    if version.status == ModelStatus.active:
        return version
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.kind == version.kind, ModelVersion.status == ModelStatus.active)
        .values(status=ModelStatus.retired)
    )
    session.flush()
    version.status = ModelStatus.active
    version.promoted_at = utcnow()
    session.flush()
    return version


def list_model_versions(session: Session, kind: ModelKind | None = None) -> list[ModelVersion]:
    """All versions, newest first."""
    query = select(ModelVersion).order_by(ModelVersion.id.desc())
    if kind is not None:
        query = query.where(ModelVersion.kind == kind)
    return list(session.scalars(query))
