"""Where a catch-up starts: never past a message that was not dealt with."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.harvesting.watermark import GIVE_UP_AFTER, Watermarks
from sandbox.demo import MARKER, prepare_demo_dir


def test_a_slow_message_holds_the_mark_below_it() -> None:
    marks = Watermarks()
    marks.hold(1, 100)  # a generation still downloading
    marks.hold(1, 101)
    marks.release(1, 101, done=True)  # a later chat line finished first
    assert marks.mark(1) == 99
    marks.release(1, 100, done=True)
    assert marks.mark(1) == 101


def test_temporary_failures_hold_until_given_up() -> None:
    marks = Watermarks()
    marks.saw(1, 90)
    for attempt in range(1, GIVE_UP_AFTER):
        marks.hold(1, 100)
        marks.release(1, 100, done=False)  # a CDN timeout: the next catch-up retries it
        marks.hold(1, 120)
        marks.release(1, 120, done=True)
        assert marks.mark(1) == 99, attempt
    marks.hold(1, 100)
    marks.release(1, 100, done=False)  # failed too often: no longer holds the channel back
    assert marks.mark(1) == 120


def test_an_unfinished_catch_up_walk_caps_the_mark() -> None:
    marks = Watermarks()
    marks.walking(1, 50)  # missed history from 50 on is being walked
    marks.hold(1, 500)
    marks.release(1, 500, done=True)  # live messages keep coming
    assert marks.mark(1) == 50
    marks.walking(1, 70)
    assert marks.mark(1) == 70
    marks.walked(1)
    assert marks.mark(1) == 500
    assert marks.unwritten() == {1: 500}
    marks.written.update(marks.unwritten())
    assert marks.unwritten() == {}


def test_messages_of_channels_not_harvested_are_not_remembered() -> None:
    marks = Watermarks()
    marks.hold(2, 10)
    marks.release(2, 10, done=True, harvested=False)
    assert marks.mark(2) is None and marks.unwritten() == {}


def test_the_demo_only_empties_its_own_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "precious.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an earlier demo's folder"):
        prepare_demo_dir(project)
    assert (project / "precious.txt").exists()
    demo = tmp_path / "demo"
    prepare_demo_dir(demo)
    (demo / "hps.sqlite3").write_text("old")
    prepare_demo_dir(demo)
    assert sorted(p.name for p in demo.iterdir()) == [MARKER]
