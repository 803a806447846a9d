"""A training snapshot: the community's choices up to a cutoff, as preference sets split by
prompt, with their images as local files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from db.datasets import iter_choice_sets
from db.engine import run_transaction
from db.scope import Scope
from hps.training.manifests import PreferenceSet, one_hot
from media.model_inputs import ModelInputSpec, model_input_of
from media.store import ImageStore, LocalImageStore


@dataclass
class Snapshot:
    train: list[PreferenceSet] = field(default_factory=list)
    validation: list[PreferenceSet] = field(default_factory=list)
    test: list[PreferenceSet] = field(default_factory=list)
    description: dict[str, Any] = field(default_factory=dict)


def local_image_path(
    store: ImageStore,
    sha256: str,
    cache_dir: Path,
    model_input: tuple[str, int] | None = None,
) -> str:
    """A filesystem path of the blob (downloaded into ``cache_dir`` for remote stores). With
    ``model_input`` = (geometry, size) of the model to train, the path of the blob's stored
    model input instead (``media.model_inputs``: derived and stored first when missing or
    damaged), which the trainer's geometry maps to the same pixels as the original."""
    if model_input is not None:
        spec = ModelInputSpec(*model_input)
        data = model_input_of(store, sha256, spec)
        if data is not None:
            path = store.input_path(sha256, *spec) if isinstance(store, LocalImageStore) else None
            if path is not None and path.is_file():
                return str(path)
            return _cached(cache_dir / f"{sha256}.{spec.mode}-{spec.size}.png", lambda: data)
    if isinstance(store, LocalImageStore):
        return str(store.path_for(sha256))
    return _cached(cache_dir / f"{sha256}.png", lambda: store.get(sha256))


def _cached(target: Path, read: Callable[[], bytes]) -> str:
    """``target`` after writing ``read()`` there atomically unless it exists."""
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        partial.write_bytes(read())
        partial.replace(target)
    return str(target)


def take_snapshot(
    factory: sessionmaker[Session],
    store: ImageStore,
    *,
    scope: Scope,
    salt: str,
    cutoff: datetime,
    cache_dir: Path,
    duel_votes: bool = True,
    model_input: tuple[str, int] | None = None,
) -> Snapshot:
    """Every choice of ``scope`` usable for training (consent applied) made up to ``cutoff``,
    by split, plus a description to record with the trained model (scope, counts, cutoff,
    salt and a digest of the choice ids). With ``duel_votes`` the arena's closed duels' votes
    for a side are two-image sets as well (:func:`db.datasets.iter_choice_sets`). With
    ``model_input`` = (geometry, size) of the model to train, the sets' paths are the images'
    stored model inputs (:func:`local_image_path`): the trainer decodes 224 px, not 512 px."""
    snapshot = Snapshot()
    digest = hashlib.sha256()
    votes = 0

    def collect(session: Session) -> None:
        nonlocal votes
        sets = iter_choice_sets(
            session, scope=scope, salt=salt, cutoff=cutoff, duel_votes=duel_votes
        )
        for choice in sets:
            paths = tuple(
                local_image_path(store, sha, cache_dir, model_input) for sha in choice.image_sha256s
            )
            target = one_hot(choice.chosen_index, len(paths))
            getattr(snapshot, choice.split).append(
                PreferenceSet(choice.prompt, paths, target, split=choice.split)
            )
            # A pick keeps its bare id (digests of pick-only snapshots stay as they were);
            # a duel vote's id is another table's, so it is named by its source.
            ident = choice.choice_id if choice.source == "choice" else choice.key
            votes += choice.source == "duel_vote"
            digest.update(f"{ident}:{choice.chosen_index};".encode())

    run_transaction(factory, collect)
    snapshot.description = {
        "scope": scope.describe(),
        "cutoff": cutoff.isoformat(),
        "salt": salt,
        "train_sets": len(snapshot.train),
        "validation_sets": len(snapshot.validation),
        "test_sets": len(snapshot.test),
        "duel_votes": duel_votes,
        "duel_vote_sets": votes,
        "choices_digest": digest.hexdigest(),
    }
    return snapshot
