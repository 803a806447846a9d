"""Choice sets for training, split deterministically by prompt."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.datasets import SPLITS, iter_choice_sets, split_for_prompt
from db.ingest import ChoiceIn, record_choice, record_generation
from db.models import ChoiceMethod
from db.privacy import opt_out
from db.prompts import prompt_hash
from db.scope import Scope
from tests.factories import make_generation

GUILD = Scope.guild(7)  # tests.factories.make_generation's default guild
SALT = "test-salt"


def test_split_is_deterministic_and_close_to_the_fractions() -> None:
    hashes = [prompt_hash(f"prompt number {n}") for n in range(5000)]
    splits = [split_for_prompt(h, SALT) for h in hashes]
    assert splits == [split_for_prompt(h, SALT) for h in hashes]
    counts = Counter(splits)
    assert 3800 <= counts["train"] <= 4200
    assert 400 <= counts["validation"] <= 600
    assert 400 <= counts["test"] <= 600
    # Another salt reshuffles.
    assert splits != [split_for_prompt(h, "other") for h in hashes]
    with pytest.raises(ValueError, match="sum to 1"):
        split_for_prompt(hashes[0], SALT, (0.5, 0.2, 0.2))


def test_choice_sets_are_split_by_prompt_never_by_image(factory: sessionmaker[Session]) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    with factory() as session, session.begin():
        for p in range(40):
            for repeat in range(3):  # the same prompt generated three times, picked by two users
                generation = make_generation(
                    requester_id=1,
                    prompt=f"Prompt {p}" + " " * repeat,
                    seeds=[p * 10 + repeat, 999],
                )
                recorded = record_generation(session, generation)
                for user in (2, 3):
                    record_choice(
                        session,
                        ChoiceIn(
                            user,
                            (p + user) % 2,
                            ChoiceMethod.button,
                            recorded.generation_id,
                            at=t0 + timedelta(minutes=p),
                        ),
                    )
    with factory() as session:
        everything = list(iter_choice_sets(session, scope=GUILD, salt=SALT, batch_size=7))
        assert len(everything) == 40 * 3 * 2
        by_prompt: dict[str, set[str]] = {}
        for choice_set in everything:
            by_prompt.setdefault(choice_set.prompt_hash, set()).add(choice_set.split)
            assert len(choice_set.storage_keys) == 2
            assert (
                choice_set.chosen_index
                == (int(choice_set.prompt.split()[1]) + choice_set.user_id) % 2
            )
        assert all(len(splits) == 1 for splits in by_prompt.values())
        per_split = {
            s: list(iter_choice_sets(session, scope=GUILD, salt=SALT, split=s)) for s in SPLITS
        }
        assert sum(len(v) for v in per_split.values()) == len(everything)
        assert {c.choice_id for c in per_split["test"]} == {
            c.choice_id for c in everything if c.split == "test"
        }
        early = list(
            iter_choice_sets(session, scope=GUILD, salt=SALT, cutoff=t0 + timedelta(minutes=9))
        )
        assert len(early) == 10 * 3 * 2


def test_opted_out_users_and_skips_are_left_out(factory: sessionmaker[Session]) -> None:
    with factory() as session, session.begin():
        recorded = record_generation(session, make_generation(requester_id=1))
        record_choice(session, ChoiceIn(2, 1, ChoiceMethod.button, recorded.generation_id))
        record_choice(session, ChoiceIn(3, None, ChoiceMethod.vote, recorded.generation_id))
        record_choice(session, ChoiceIn(4, 3, ChoiceMethod.button, recorded.generation_id))
        opt_out(session, 4)
    with factory() as session:
        sets = list(iter_choice_sets(session, scope=GUILD, salt=SALT))
    assert [(s.user_id, s.chosen_index) for s in sets] == [(2, 1)]
