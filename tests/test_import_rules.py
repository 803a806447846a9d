"""The import rules of DESIGN.md, checked three ways: import-linter contracts (pyproject),
a direct scan of every import statement, and a real import of the bot in a fresh process."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN = {
    "hps": {"bot", "worker", "db", "config", "media", "cli"},
    "db": {"bot", "worker", "hps", "cli"},
    "bot": {"torch", "hps", "worker", "open_clip", "diffusers", "transformers", "torchvision"},
    "media": {"bot", "worker", "db", "hps", "config", "cli"},
    "config": {"bot", "worker", "db", "hps", "media", "cli", "jobqueue"},
    "jobqueue": {"worker", "hps", "bot", "cli", "torch"},
    "exchange": {"bot", "worker", "hps", "cli", "jobqueue", "torch", "open_clip"},
    "discord_text": {"bot", "worker", "db", "hps", "media", "config", "cli", "jobqueue"},
}


def imported_top_levels(source: str) -> set[str]:
    """Top-level package names imported anywhere in ``source`` (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def violations() -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = imported_top_levels(path.read_text()) & forbidden
            if bad:
                found.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    return found


def test_no_package_imports_what_design_forbids() -> None:
    assert violations() == []


def test_the_scan_catches_a_violation() -> None:
    planted = "def lazy():\n    import torch\n    from hps.scoring import x\n"
    assert imported_top_levels(planted) & FORBIDDEN["bot"] == {"torch", "hps"}


def test_import_linter_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 6 kept, 0 broken" in result.stdout


def test_the_bot_process_loads_no_torch() -> None:
    code = (
        "import sys, importlib, pkgutil, bot\n"
        "for info in pkgutil.walk_packages(bot.__path__, 'bot.'):\n"
        "    importlib.import_module(info.name)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'hps', 'worker', 'open_clip', 'diffusers', 'transformers'))\n"
        "print(heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_base_install_pulls_no_torch() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    heavy = ("torch", "torchvision", "open_clip", "open-clip", "diffusers", "transformers", "peft")
    base = [requirement.lower() for requirement in project["dependencies"]]
    assert not [r for r in base if r.startswith(heavy)]
    ml = [requirement.lower() for requirement in project["optional-dependencies"]["ml"]]
    assert any(r.startswith("torch") for r in ml) and any(r.startswith("open_clip") for r in ml)


def test_the_worker_parent_loads_no_torch_before_forking() -> None:
    code = (
        "import sys, worker.app\n"
        "heavy = ('torch', 'hps', 'open_clip')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
