"""The import rules of DESIGN.md, checked four ways: import-linter contracts (pyproject),
a direct scan of every import statement, a search for import cycles among all modules, and a
real import of the bot in a fresh process."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from tests.project import ROOT, SOURCE_PACKAGES

# Every package of the project (tests excepted): what the cycle search covers.
PROJECT_PACKAGES = SOURCE_PACKAGES

FORBIDDEN = {
    "hps": {"bot", "worker", "db", "config", "media", "cli"},
    "db": {"bot", "worker", "hps", "cli"},
    "bot": {"torch", "hps", "worker", "open_clip", "diffusers", "transformers", "torchvision"},
    "media": {"bot", "worker", "db", "hps", "config", "cli"},
    "config": {"bot", "worker", "db", "hps", "media", "cli", "jobqueue"},
    "jobqueue": {"worker", "hps", "bot", "cli", "torch"},
    "exchange": {"bot", "worker", "hps", "cli", "jobqueue", "torch", "open_clip"},
    "discord_text": {"bot", "worker", "db", "hps", "media", "config", "cli", "jobqueue"},
    # The lowest leaf: none of the product, nothing heavy (see also its whitelist below).
    "rules": {*SOURCE_PACKAGES, "torch", "numpy", "sqlalchemy", "open_clip"} - {"rules"},
}
# What rules/ may import at all: the standard library, Pillow and itself.
RULES_MAY_IMPORT = {*sys.stdlib_module_names, "PIL", "rules"}


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


def test_rules_imports_only_the_standard_library_and_pillow() -> None:
    outside = {
        f"{path.relative_to(ROOT)}: {sorted(names)}"
        for path in sorted((ROOT / "rules").rglob("*.py"))
        if (names := imported_top_levels(path.read_text()) - RULES_MAY_IMPORT)
    }
    assert outside == set()
    assert (ROOT / "rules" / "geometry.py").exists()  # the scan did read the package


def test_the_scan_catches_a_violation() -> None:
    planted = "def lazy():\n    import torch\n    from hps.scoring import x\n"
    assert imported_top_levels(planted) & FORBIDDEN["bot"] == {"torch", "hps"}
    assert imported_top_levels(planted) - RULES_MAY_IMPORT == {"torch", "hps"}


def test_import_linter_contracts_hold() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.fail("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([lint_imports], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 22 kept, 0 broken" in result.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import cycles of ``graph``: each strongly connected group of two or more modules
    (sorted), found with Tarjan's algorithm (iterative: the graph has hundreds of modules)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = lowlink[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            module, imported = work[-1]
            target = next(imported, None)
            if target is not None:
                if target not in index:
                    index[target] = lowlink[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append(
                        (target, iter(sorted(graph.find_modules_directly_imported_by(target))))
                    )
                elif target in on_stack:
                    lowlink[module] = min(lowlink[module], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                lowlink[parent] = min(lowlink[parent], lowlink[module])
            if lowlink[module] == index[module]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == module:
                        break
                if len(group) > 1:
                    cycles.append(sorted(group))
    return sorted(cycles)


def describe_cycle(graph: grimp.ImportGraph, group: list[str]) -> str:
    """One cycle of ``group`` as ``a -> b -> a`` (the shortest way back to its first module)."""
    first = group[0]
    back = min(
        (
            graph.find_shortest_chain(importer=imported, imported=first)
            for imported in graph.find_modules_directly_imported_by(first)
            if imported in group
        ),
        key=lambda chain: len(chain or ()),
    )
    return " -> ".join([first, *(back or ())])


def test_no_module_is_part_of_an_import_cycle() -> None:
    """Module-level, function-level and ``TYPE_CHECKING`` imports all count: an import inside
    a function or under ``TYPE_CHECKING`` still makes two modules depend on each other, and
    the layering above leaves no reason for one."""
    sys.path.insert(0, str(ROOT))  # bench/ is a folder of the checkout, not installed
    try:
        graph = grimp.build_graph(*PROJECT_PACKAGES, cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    cycles = [describe_cycle(graph, group) for group in import_cycles(graph)]
    assert cycles == []


def test_the_cycle_search_finds_a_planted_cycle() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")]:
        graph.add_import(importer=importer, imported=imported)
    graph.add_import(importer="p.e", imported="p.e")  # a module importing itself is no cycle
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]
    assert describe_cycle(graph, ["p.a", "p.b", "p.c"]) == "p.a -> p.b -> p.c -> p.a"


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
