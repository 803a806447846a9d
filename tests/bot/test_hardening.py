"""Issue 11 without a live bot: what the bot posts (escaping, limits, allowed mentions), what
it reads (downloads; the requester of a generator's message: tests/bot/harvesting/adapters)
and the atomic job limits."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.downloads import DownloadRefused, check_url
from bot.formatting import REPORT_FILENAME, render_result
from db.errors import JobLimitReached
from db.jobs import UserJobLimits, create_job
from db.models import Job
from discord_text import MAX_CONTENT_CHARS, fit_content, quote_user_text
from media.store import LocalImageStore
from sandbox.discord_rules import pings_of

HOSTILE = "@everyone @here <@&123456789012345678> <@876543210987654321> **bold** `x` [l](u)"
ALICE = 111111111111111111
MALLORY = 222222222222222222


def test_user_text_neither_pings_nor_formats() -> None:
    quoted = quote_user_text(HOSTILE)
    pings = pings_of(quoted, None)  # even with no allowed_mentions at all
    assert not pings.anyone
    assert "**bold**" not in quoted and "\\*\\*bold\\*\\*" in quoted
    assert "\n" not in quote_user_text("line one\n# heading\n> quote")


def test_content_is_cut_to_discords_limit_without_a_dangling_escape() -> None:
    assert fit_content("x" * 2000) == "x" * 2000
    cut = fit_content("a" * 1998 + "\\*" + "b" * 50)
    assert len(cut) <= MAX_CONTENT_CHARS and cut.endswith("…") and not cut.endswith("\\…")


@pytest.mark.parametrize(
    "kind, payload",
    [
        ("generate_result", {"prompt": HOSTILE, "images": []}),
        ("regenerate_result", {"prompt": HOSTILE, "regenerated": {}, "original": {}}),
        ("rank_result", {"prompt": HOSTILE, "ranking": [], "model_version": {"name": HOSTILE}}),
        ("score_result", {"scores": [{"score": 1.0}], "model_version": {"name": HOSTILE}}),
        ("job_failed", {"error": HOSTILE}),
        ("stats_result", {"text": f"**Most chosen prompt**: “{HOSTILE}”"}),
        ("export_result", {"text": f"licence {HOSTILE}"}),
    ],
)
def test_every_result_pings_only_its_requester(
    kind: str, payload: dict[str, Any], tmp_path: Path
) -> None:
    post = render_result(kind, {**payload, "requested_by": ALICE}, LocalImageStore(tmp_path))
    allowed = post.allowed_mentions.to_dict()
    assert allowed["parse"] == [] and [int(u) for u in allowed["users"]] == [ALICE]
    assert not allowed.get("replied_user")
    # By the text alone (no allowed_mentions): the requester and nobody else.
    assert pings_of(post.content, None).users == [ALICE]
    assert not pings_of(post.content, None).everyone and not pings_of(post.content, None).roles
    # And by Discord's rules with the allowed_mentions the post carries.
    assert pings_of(post.content, allowed).users == [ALICE]
    assert len(post.content) <= MAX_CONTENT_CHARS


def test_a_long_report_is_cut_and_attached_whole(tmp_path: Path) -> None:
    text = "\n".join(f"line {n}: " + "x" * 60 for n in range(100))
    store = tmp_path_store(tmp_path)
    post = render_result("stats_result", {"text": text, "requested_by": ALICE}, store)
    assert len(post.content) <= MAX_CONTENT_CHARS
    assert post.content.endswith(f"(the whole text is in {REPORT_FILENAME})")
    [report] = post.files
    assert report.filename == REPORT_FILENAME and report.fp.read().decode() == text


def tmp_path_store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path / "store")


def test_failure_reasons_are_short_and_escaped(tmp_path: Path) -> None:
    post = render_result("job_failed", {"error": "x" * 5000}, tmp_path_store(tmp_path))
    assert len(post.content) < 400


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://cdn.discordapp.com/a.png", ["cdn.discordapp.com"]),
        ("https://cdn.discordapp.com:443/a.png", ["cdn.discordapp.com"]),
        ("http://127.0.0.1:8080/a.png", ["127.0.0.1:8080"]),  # a test setting names the port
    ],
)
def test_allowed_urls(url: str, allowed: list[str]) -> None:
    check_url(url, allowed, allow_insecure=url.startswith("http:"))


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://cdn.discordapp.com:22/a.png", "only port 443"),
        ("https://cdn.discordapp.com:8443/a.png", "only port 443"),
        ("https://user:pw@cdn.discordapp.com/a.png", "credentials"),
        ("https://cdn.discordapp.com:99999/a.png", "invalid port"),
        ("https://cdn.discordapp.com.evil.example/a.png", "not an allowed CDN host"),
    ],
)
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(DownloadRefused, match=reason):
        check_url(url, ["cdn.discordapp.com"])


def test_job_limits_hold_under_concurrent_requests(pg_factory: sessionmaker[Session]) -> None:
    """Six requests of one user at once, 1 open job allowed: exactly one job is created."""
    limits = UserJobLimits(per_minute=10, max_open=1)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def request() -> None:
        barrier.wait()
        try:
            with pg_factory() as session, session.begin():
                create_job(session, "score", {}, requested_by=ALICE, limits=limits)
            outcomes.append("created")
        except JobLimitReached:
            outcomes.append("refused")

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created"] + ["refused"] * 5
    with pg_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_job_limits_per_minute_on_both_backends(factory: sessionmaker[Session]) -> None:
    limits = UserJobLimits(per_minute=2, max_open=10)
    for _ in range(2):
        with factory() as session, session.begin():
            create_job(session, "score", {}, requested_by=ALICE, limits=limits)
    with pytest.raises(JobLimitReached, match="2 jobs in the last minute"):
        with factory() as session, session.begin():
            create_job(session, "score", {}, requested_by=ALICE, limits=limits)
    with factory() as session, session.begin():  # other users and unlimited jobs go on
        create_job(session, "score", {}, requested_by=MALLORY, limits=limits)
        create_job(session, "score", {}, requested_by=ALICE)


def test_a_withdrawn_reaction_withdraws_the_pick(factory: sessionmaker[Session]) -> None:
    """The requester's remaining number reactions are the pick; none left, no pick."""
    from db.ingest import reaction_choice_exists, record_generation, sync_reaction_choice
    from db.models import Choice, Image
    from tests.factories import make_generation

    generation = make_generation(requester_id=ALICE)
    message = generation.source_message_id

    def pick() -> int | None:
        with factory() as session:
            return session.scalar(
                select(Image.position).join(Choice, Choice.chosen_image_id == Image.id)
            )

    def sync(positions: list[int]) -> int | None:
        with factory() as session, session.begin():
            return sync_reaction_choice(session, message, ALICE, positions)

    with factory() as session, session.begin():
        record_generation(session, generation)
    sync([2])
    assert pick() == 2
    sync([0, 2])  # another reaction added: the pick stays while its reaction does
    assert pick() == 2
    sync([0, 3])  # 3 removed... the remaining lowest one is the pick
    assert pick() == 0
    assert sync([]) is None  # every number reaction removed
    assert pick() is None
    with factory() as session:
        assert not reaction_choice_exists(session, message, ALICE)
        assert session.scalar(select(func.count()).select_from(Choice)) == 0
