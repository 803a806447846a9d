"""Guild scope (db.scope) and the one consent predicate (db.consent), at the database level:
which rows a guild and the operators' pooled scope see, promotion within a scope, the global
fallback of a guild's model, and an opted-out requester's generations left out of training
snapshots, exports, stats and percentiles alike. On PostgreSQL and SQLite."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import iter_choice_sets
from db.export_queries import iter_export_choices, plan_export
from db.ingest import ChoiceIn, record_choice, record_generation
from db.models import ChoiceMethod, Generation, Image, ModelKind, ModelStatus, ModelVersion, Sharing
from db.privacy import opt_in, opt_out
from db.registry import (
    ModelNotFound,
    get_active_model,
    list_model_versions,
    promote_model_version,
    register_model_version,
)
from db.scope import Scope, find_generation, pooled_guild_ids, set_sharing, sharing_of
from db.scores import percentiles, store_scores
from db.stats import collect_stats, totals
from tests.factories import make_generation

GUILD_A, GUILD_B, GUILD_C = 1001, 2002, 3003
SALT = "scope-salt"


def _generation(
    session: Session, guild_id: int | None, requester: int | None, prompt: str, seed: int
) -> int:
    recorded = record_generation(
        session,
        make_generation(
            requester_id=requester,
            prompt=prompt,
            seeds=[seed, seed + 1, seed + 2, seed + 3],
            guild_id=guild_id,
        ),
    )
    return recorded.generation_id


def _visible(session: Session, scope: Scope) -> set[int]:
    return set(session.scalars(select(Generation.id).where(scope.generations())))


# --- Scope --------------------------------------------------------------------------------


def test_a_guild_sees_its_own_and_the_pool_sees_pooled_guilds_and_guildless_rows(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        a = _generation(session, GUILD_A, 11, "a private guild's prompt", 10)
        b = _generation(session, GUILD_B, 12, "a pooled guild's prompt", 20)
        imported = _generation(session, None, None, "an imported prompt", 30)
        set_sharing(session, GUILD_A, Sharing.private)
        set_sharing(session, GUILD_B, Sharing.pooled)
    with factory() as session:
        assert _visible(session, Scope.guild(GUILD_A)) == {a}
        assert _visible(session, Scope.guild(GUILD_B)) == {b}
        assert _visible(session, Scope.guild(GUILD_C)) == set()
        # Private A is not pooled; guildless rows (an operator's import) are.
        assert _visible(session, Scope.pooled()) == {b, imported}
        assert pooled_guild_ids(session) == [GUILD_B]
        assert sharing_of(session, GUILD_A) == Sharing.private
        assert sharing_of(session, GUILD_C) == Sharing.private  # no config: private

    with factory() as session, session.begin():  # sharing is reversible, per guild
        set_sharing(session, GUILD_A, Sharing.pooled)
        set_sharing(session, GUILD_B, Sharing.private)
    with factory() as session:
        assert _visible(session, Scope.pooled()) == {a, imported}
        assert _visible(session, Scope.guild(GUILD_B)) == {b}  # its own, whatever it shares


def test_scope_of_a_job_and_its_description() -> None:
    assert Scope.of_job(GUILD_A) == Scope.guild(GUILD_A)
    assert Scope.of_job(GUILD_A, pooled=True) == Scope.pooled()
    assert Scope.of_job(None) == Scope.pooled()  # the CLI queues no guild
    assert Scope.guild(GUILD_A).describe() == f"guild {GUILD_A}"
    assert Scope.pooled().describe() == "pooled" and Scope.pooled().is_pooled
    assert Scope.guild(GUILD_A).model_guild() == GUILD_A and Scope.pooled().model_guild() is None


def test_find_generation_only_within_the_scope(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        a = _generation(session, GUILD_A, 11, "in A", 10)
        b = _generation(session, GUILD_B, 12, "in B", 20)
        b_message = session.get_one(Generation, b).source_message_id
        set_sharing(session, GUILD_B, Sharing.pooled)
        opt_out(session, 11)  # a user may still rank their own opted-out generation
    with factory() as session:
        a_message = session.get_one(Generation, a).source_message_id
        assert find_generation(session, Scope.guild(GUILD_A), message_id=a_message) == a
        assert find_generation(session, Scope.guild(GUILD_A), generation_id=a) == a
        # Another guild's generation reads exactly like a missing one.
        assert find_generation(session, Scope.guild(GUILD_A), message_id=b_message) is None
        assert find_generation(session, Scope.guild(GUILD_A), generation_id=b) is None
        assert find_generation(session, Scope.guild(GUILD_A), generation_id=10**9) is None
        assert find_generation(session, Scope.pooled(), generation_id=b) == b
        assert find_generation(session, Scope.pooled(), generation_id=a) is None  # A private
        with pytest.raises(ValueError):
            find_generation(session, Scope.guild(GUILD_A))
        with pytest.raises(ValueError):
            find_generation(session, Scope.guild(GUILD_A), message_id=1, generation_id=1)


# --- model versions per guild -------------------------------------------------------------


@dataclass
class Versions:
    global_active: int
    global_candidate: int
    a_active: int
    a_candidate: int
    b_active: int
    b_candidate: int


def _version(
    session: Session, name: str, guild_id: int | None, *, active: bool, kind: ModelKind
) -> int:
    version = register_model_version(
        session,
        kind=kind,
        name=name,
        checkpoint_key=f"{name}.safetensors",
        architecture="tiny",
        checkpoint_sha256="0" * 64,
        guild_id=guild_id,
    )
    if active:
        promote_model_version(session, version.id)
    return version.id


def _versions(factory: sessionmaker[Session], kind: ModelKind = ModelKind.hps) -> Versions:
    with factory() as session, session.begin():
        return Versions(
            global_active=_version(session, "global-1", None, active=True, kind=kind),
            global_candidate=_version(session, "global-2", None, active=False, kind=kind),
            a_active=_version(session, "a-1", GUILD_A, active=True, kind=kind),
            a_candidate=_version(session, "a-2", GUILD_A, active=False, kind=kind),
            b_active=_version(session, "b-1", GUILD_B, active=True, kind=kind),
            b_candidate=_version(session, "b-2", GUILD_B, active=False, kind=kind),
        )


def _statuses(factory: sessionmaker[Session]) -> dict[str, ModelStatus]:
    with factory() as session:
        return {v.name: v.status for v in session.scalars(select(ModelVersion))}


def test_get_active_model_prefers_the_guilds_own_and_falls_back_to_the_global_one(
    factory: sessionmaker[Session],
) -> None:
    v = _versions(factory)
    with factory() as session:

        def active(guild_id: int | None) -> int | None:
            version = get_active_model(session, ModelKind.hps, guild_id)
            return None if version is None else version.id

        assert active(GUILD_A) == v.a_active
        assert active(GUILD_B) == v.b_active
        assert active(GUILD_C) == v.global_active  # no model of its own: the global one
        assert active(None) == v.global_active
        assert get_active_model(session, ModelKind.lora, GUILD_A) is None  # per kind
    with factory() as session, session.begin():
        session.get_one(ModelVersion, v.global_active).status = ModelStatus.retired
    with factory() as session:
        assert get_active_model(session, ModelKind.hps, GUILD_C) is None
        assert get_active_model(session, ModelKind.hps, GUILD_A).id == v.a_active  # type: ignore[union-attr]


def test_promoting_in_a_guild_retires_only_that_guilds_active_version(
    factory: sessionmaker[Session],
) -> None:
    v = _versions(factory)
    with factory() as session, session.begin():
        promote_model_version(session, v.a_candidate, Scope.guild(GUILD_A))
    assert _statuses(factory) == {
        "global-1": ModelStatus.active,
        "global-2": ModelStatus.candidate,
        "a-1": ModelStatus.retired,
        "a-2": ModelStatus.active,
        "b-1": ModelStatus.active,
        "b-2": ModelStatus.candidate,
    }
    before = _statuses(factory)
    # Another guild's version and a global one are not A's to promote: "not found", no change.
    for other in (v.b_candidate, v.b_active, v.global_candidate, 10**6):
        with factory() as session, session.begin(), pytest.raises(ModelNotFound) as refused:
            promote_model_version(session, other, Scope.guild(GUILD_A))
        assert str(refused.value) == f"no model version {other} in this server"
    # A guild's version is not the operators' either.
    with factory() as session, session.begin(), pytest.raises(ModelNotFound):
        promote_model_version(session, v.b_candidate, Scope.pooled())
    assert _statuses(factory) == before

    # The operators promote a global version: the global one is retired, guilds keep theirs.
    with factory() as session, session.begin():
        promote_model_version(session, v.global_candidate, Scope.pooled())
    assert _statuses(factory) == {
        **before,
        "global-1": ModelStatus.retired,
        "global-2": ModelStatus.active,
    }
    with factory() as session:
        assert get_active_model(session, ModelKind.hps, GUILD_C).id == v.global_candidate  # type: ignore[union-attr]
        assert get_active_model(session, ModelKind.hps, GUILD_B).id == v.b_active  # type: ignore[union-attr]


def test_lora_versions_are_scoped_like_hps_ones(factory: sessionmaker[Session]) -> None:
    v = _versions(factory, ModelKind.lora)
    with factory() as session, session.begin():
        promote_model_version(session, v.b_candidate, Scope.guild(GUILD_B))
    statuses = _statuses(factory)
    assert statuses["b-1"] == ModelStatus.retired and statuses["b-2"] == ModelStatus.active
    assert statuses["a-1"] == ModelStatus.active and statuses["global-1"] == ModelStatus.active


def test_listing_shows_a_scope_its_own_versions_only(factory: sessionmaker[Session]) -> None:
    _versions(factory)
    with factory() as session:

        def names(scope: Scope | None) -> list[str]:
            return [version.name for version in list_model_versions(session, scope=scope)]

        assert names(Scope.guild(GUILD_A)) == ["a-2", "a-1"]
        assert names(Scope.guild(GUILD_C)) == []
        assert names(Scope.pooled()) == ["global-2", "global-1"]
        assert len(names(None)) == 6  # the CLI's view: everything


# --- consent: one predicate everywhere ----------------------------------------------------

CONSENTING, OPTED_OUT, CHOOSER, OPTED_OUT_CHOOSER = 51, 52, 53, 54


@dataclass
class ConsentWorld:
    kept: int  # requested by a consenting user
    dropped: int  # requested by a user who then opted out
    other_guild: int  # another guild's, for the scope
    model_version_id: int


def _consent_world(session: Session) -> ConsentWorld:
    kept = _generation(session, GUILD_A, CONSENTING, "kept prompt", 100)
    dropped = _generation(session, GUILD_A, OPTED_OUT, "dropped prompt", 200)
    other = _generation(session, GUILD_B, CONSENTING, "other guild prompt", 300)
    for generation_id in (kept, dropped, other):
        for user, position in ((CHOOSER, 0), (OPTED_OUT_CHOOSER, 1)):
            record_choice(session, ChoiceIn(user, position, ChoiceMethod.button, generation_id))
    version = register_model_version(
        session,
        kind=ModelKind.hps,
        name="consent-model",
        checkpoint_key="consent.safetensors",
        architecture="tiny",
        checkpoint_sha256="0" * 64,
    )

    def scores_of(generation_id: int, values: list[float]) -> dict[int, float]:
        ids = session.scalars(
            select(Image.id).where(Image.generation_id == generation_id).order_by(Image.position)
        ).all()
        return dict(zip(ids, values, strict=True))

    store_scores(session, version.id, scores_of(kept, [1.0, 2.0, 3.0, 4.0]))
    store_scores(session, version.id, scores_of(dropped, [0.1, 0.2, 0.3, 0.4]))
    store_scores(session, version.id, scores_of(other, [0.5, 0.6, 0.7, 0.8]))
    # Opted out after the fact: the rows stay (until forget-me), and are not used.
    opt_out(session, OPTED_OUT)
    opt_out(session, OPTED_OUT_CHOOSER)
    return ConsentWorld(kept, dropped, other, version.id)


def _everywhere(session: Session, world: ConsentWorld, scope: Scope) -> dict[str, object]:
    """What each consumer of the data sees of ``scope``."""
    stats = collect_stats(session, scope)
    return {
        "training": sorted(
            (c.generation_id, c.user_id) for c in iter_choice_sets(session, scope=scope, salt=SALT)
        ),
        "export": sorted(
            (c.generation_id, c.user_id)
            for c in iter_export_choices(session, split_salt=SALT, scope=scope)
        ),
        "export_plan": plan_export(session, scope=scope).choices,
        "totals": totals(session, scope),
        "stats_prompts": sorted(p.text for p in stats.top_prompts),
        "stats_scores": sorted((d.name, d.count) for d in stats.score_distributions),
        "percentile": percentiles(session, world.model_version_id, [2.5], scope),
    }


def test_an_opted_out_requesters_generations_are_left_out_everywhere_alike(
    factory: sessionmaker[Session],
) -> None:
    with factory() as session, session.begin():
        world = _consent_world(session)
    scope = Scope.guild(GUILD_A)
    with factory() as session:
        seen = _everywhere(session, world, scope)
    # Only the consenting requester's generation, picked by the consenting chooser.
    assert seen["training"] == [(world.kept, CHOOSER)]
    assert seen["export"] == [(world.kept, CHOOSER)]
    assert seen["export_plan"] == 1
    got_totals = seen["totals"]
    assert (got_totals.generations, got_totals.images, got_totals.prompts) == (1, 4, 1)  # type: ignore[attr-defined]
    assert (got_totals.choices, got_totals.choosers) == (1, 1)  # type: ignore[attr-defined]
    assert seen["stats_prompts"] == ["kept prompt"]
    assert seen["stats_scores"] == [("consent-model", 4)]
    # 2.5 beats 2 of the 4 kept images; the opted-out requester's images (all lower) and the
    # other guild's (all lower) are not counted.
    assert seen["percentile"] == [50.0]

    # Opting in again brings them back, everywhere at once: the rows were kept.
    with factory() as session, session.begin():
        opt_in(session, OPTED_OUT)
    with factory() as session:
        again = _everywhere(session, world, scope)
    assert again["training"] == sorted([(world.kept, CHOOSER), (world.dropped, CHOOSER)])
    assert again["export"] == again["training"] and again["export_plan"] == 2
    assert again["totals"].generations == 2  # type: ignore[attr-defined]
    assert again["stats_prompts"] == ["dropped prompt", "kept prompt"]
    assert again["stats_scores"] == [("consent-model", 8)]
    assert again["percentile"] == [75.0]


def test_the_consumers_agree_with_the_scope_predicate(factory: sessionmaker[Session]) -> None:
    """Training, export, stats and percentiles take exactly the generations that
    ``Scope.generations()`` (scope and db.consent) admits: the same predicate, in the pooled
    scope too."""
    with factory() as session, session.begin():
        world = _consent_world(session)
        set_sharing(session, GUILD_B, Sharing.pooled)
        set_sharing(session, GUILD_A, Sharing.pooled)
    for scope in (Scope.guild(GUILD_A), Scope.guild(GUILD_B), Scope.pooled()):
        with factory() as session:
            admitted = _visible(session, scope)
            seen = _everywhere(session, world, scope)
            assert world.dropped not in admitted
            used = {generation for generation, _user in seen["training"]}  # type: ignore[attr-defined]
            assert used == admitted, scope
            assert {generation for generation, _user in seen["export"]} == admitted  # type: ignore[attr-defined]
            assert seen["totals"].generations == len(admitted)  # type: ignore[attr-defined]
            scored = sum(count for _name, count in seen["stats_scores"])  # type: ignore[attr-defined]
            assert scored == 4 * len(admitted)
