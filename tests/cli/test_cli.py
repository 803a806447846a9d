"""The `hps` command line: runs on embedded defaults, errors are one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from migrations.runner import head_revision

ROOT = Path(__file__).resolve().parents[2]
CLEARED = ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "DISCORD_TOKEN", "MAX_IMAGE_PIXELS")


def hps(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in CLEARED}
    environment.update(env)
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_on_embedded_defaults_twice(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = hps("run", "--check", cwd=tmp_path, HPS_DATA_DIR=str(data))
    assert first.returncode == 0, first.stderr
    assert "embedded defaults" in first.stdout and "hps: ready" in first.stdout
    assert (data / "hps.sqlite3").is_file() and (data / "images").is_dir()
    second = hps("run", "--check", cwd=tmp_path, HPS_DATA_DIR=str(data))
    assert second.returncode == 0, second.stderr
    current = hps("db", "current", cwd=tmp_path, HPS_DATA_DIR=str(data))
    assert f"current: {head_revision()}  head: {head_revision()}" in current.stdout
    stats = hps("stats", cwd=tmp_path, HPS_DATA_DIR=str(data))
    assert json.loads(stats.stdout)["generations"] == 0


def test_invalid_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    result = hps("run", cwd=tmp_path, MAX_IMAGE_PIXELS="many")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "MAX_IMAGE_PIXELS" in result.stderr and "Traceback" not in result.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = hps(
        "db",
        "upgrade",
        cwd=tmp_path,
        DATABASE_URL="postgresql+psycopg://nobody:pw-do-not-print@127.0.0.1:1/none?connect_timeout=2",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0
    assert "database unavailable: connection failed" in result.stderr
    assert "pw-do-not-print" not in result.stderr + result.stdout


def test_config_shows_no_secret(tmp_path: Path) -> None:
    result = hps(
        "config", cwd=tmp_path, DISCORD_TOKEN="very-secret-token", HPS_DATA_DIR=str(tmp_path)
    )
    assert result.returncode == 0
    shown = json.loads(result.stdout)
    assert shown["DISCORD_TOKEN"] == "**********"
    assert "very-secret-token" not in result.stdout


def test_input_nested_too_deeply_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any command that meets a RecursionError (a JSON file nested 200,000 deep) says so in
    one line and exits 2, never with a traceback."""
    import argparse

    from cli import main as cli_main

    def deep(_args: argparse.Namespace) -> int:
        import json

        json.loads("[" * 200_000 + "]" * 200_000)
        return 0

    parser = argparse.ArgumentParser()
    parser.set_defaults(handler=deep, command="stats")
    monkeypatch.setattr(cli_main, "build_parser", lambda: parser)
    assert cli_main.main([]) == 2
    err = capsys.readouterr().err
    assert err == "hps stats: error: the input is nested too deeply to read\n"


def test_help_shows_every_command_in_one_group() -> None:
    import argparse

    from cli.main import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = parser.format_help()
    grouped = help_text.split("command groups:\n", 1)[1].splitlines()
    names = [name.strip() for line in grouped for name in line.split(":", 1)[1].split(",")]
    assert len(grouped) == 4
    assert sorted(names) == sorted(subcommands.choices)  # each command once, none left out


def test_a_command_releases_its_database_connections(tmp_path: Path) -> None:
    """Commands build engine and store through db.resources.Resources (as the worker does)
    and close the engine's connections when they end, also when they fail."""
    from sqlalchemy import event, text

    from cli.resources import open_resources
    from config import load_settings
    from media.store import LocalImageStore

    settings = load_settings(hps_data_dir=tmp_path, database_url="", storage_url="")
    closed: list[object] = []
    with pytest.raises(LookupError), open_resources(settings) as resources:
        event.listen(resources.engine, "close", lambda connection, _record: closed.append(1))
        with resources.factory() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
        store = resources.store
        assert isinstance(store, LocalImageStore) and store.root.is_relative_to(tmp_path)
        assert closed == []
        raise LookupError("the command fails")
    assert closed == [1]
