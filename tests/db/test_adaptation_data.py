"""The community's harvested image sets for adaptation (db.adaptation_data): the guild's own,
consented, 4+ images, held-out prompts left out, picks by consenting members. On PostgreSQL
and SQLite."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from db.adaptation_data import distinct_prompts, harvested_sets
from db.datasets import split_for_prompt
from db.ingest import ChoiceIn, record_choice, record_generation
from db.models import ChoiceMethod
from db.privacy import opt_out
from db.prompts import prompt_hash
from db.scope import Scope
from tests.factories import make_generation

GUILD, OTHER_GUILD = 1001, 2002
SALT = "adapt-salt"


def _generation(
    session: Session, prompt: str, *, guild: int = GUILD, requester: int = 11, n: int = 4
) -> int:
    seeds = [hash(prompt) % 10_000 + k for k in range(n)]
    generation = make_generation(requester_id=requester, prompt=prompt, seeds=seeds, guild_id=guild)
    return record_generation(session, generation).generation_id


def _pick(session: Session, generation_id: int, user: int, position: int) -> None:
    record_choice(
        session, ChoiceIn(user, position, ChoiceMethod.button, generation_id=generation_id)
    )


def test_sets_in_scope_with_consent_and_held_out_prompts_left_out(
    factory: sessionmaker[Session],
) -> None:
    prompts = [f"a harvested scene {i}" for i in range(12)]
    expected = {p for p in prompts if split_for_prompt(prompt_hash(p), SALT) != "test"}
    assert expected and expected != set(prompts)  # the salt holds some prompts out
    with factory() as session, session.begin():
        ids = {prompt: _generation(session, prompt) for prompt in prompts}
        first = ids[sorted(expected)[0]]
        _pick(session, first, 21, 2)
        _pick(session, first, 22, 2)
        _pick(session, first, 23, 1)  # opts out below: this pick is not used
        _generation(session, "a set of three", n=3)
        _generation(session, "another guild's scene", guild=OTHER_GUILD)
        _generation(session, "an opted-out requester's scene", requester=31)
    with factory() as session, session.begin():
        opt_out(session, 23)
        opt_out(session, 31)
    with factory() as session:
        sets = harvested_sets(session, Scope.guild(GUILD), SALT, min_images=4, limit=100)
    assert {s.prompt for s in sets} == expected
    assert distinct_prompts(sets) == len(expected)
    assert all(len(s.image_sha256s) == 4 for s in sets)
    by_id = {s.generation_id: s for s in sets}
    assert by_id[first].picked == (2, 2)
    assert all(s.picked == () for s in sets if s.generation_id != first)


def test_limit_takes_the_most_recent_generations(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        ids = [_generation(session, f"scene number {i}") for i in range(6)]
    with factory() as session:
        sets = harvested_sets(session, Scope.guild(GUILD), "", min_images=4, limit=3)
    assert [s.generation_id for s in sets] == ids[::-1][:3]  # with this salt none is held out
