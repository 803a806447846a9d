"""Nothing in the product unpickles a file: every ``torch.load`` says ``weights_only=True``
and nothing calls ``pickle.load(s)`` (or its relatives). Checked on the syntax tree (``ast``),
so line breaks, spaces, aliases (``import torch as t``, ``from torch import load as l``) and
``**kwargs`` cannot hide a call."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.project import ROOT, SOURCE_PACKAGES

PACKAGES = (*SOURCE_PACKAGES, "scripts")
# module -> functions that unpickle whatever they are given
UNPICKLERS = {
    "pickle": {"load", "loads", "Unpickler"},
    "_pickle": {"load", "loads", "Unpickler"},
    "cPickle": {"load", "loads", "Unpickler"},
    "dill": {"load", "loads", "Unpickler"},
    "cloudpickle": {"load", "loads"},
    "joblib": {"load"},
    "pandas": {"read_pickle"},
    "shelve": {"open"},
}
TORCH_LOADERS = {"torch": {"load"}, "torch.serialization": {"load"}}


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> fully qualified name, from every import in the module."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _qualified(func: ast.expr, aliases: dict[str, str]) -> str | None:
    dotted = _dotted(func)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    if head not in aliases:
        return dotted
    return f"{aliases[head]}.{rest}" if rest else aliases[head]


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_loads(source: str, filename: str = "<source>") -> list[str]:
    """Each unsafe deserialisation in ``source``, as ``file:line: what``."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found: list[str] = []

    def flag(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, aliases) or ""
        module, _, function = name.rpartition(".")
        keywords = {k.arg: k.value for k in node.keywords}
        for keyword in node.keywords:
            if keyword.arg == "weights_only" and not _is_true(keyword.value):
                flag(node, f"{name or 'a call'}(weights_only=<not True>)")
        if function in TORCH_LOADERS.get(module, ()):
            if None in keywords:
                flag(node, f"{name}(**kwargs): weights_only cannot be checked")
            elif "weights_only" not in keywords:
                flag(node, f"{name}() without weights_only=True")
        if function in UNPICKLERS.get(module, ()):
            flag(node, f"{name}(): unpickles its input")
        if module in ("numpy", "np") and function == "load":
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                flag(node, f"{name}(allow_pickle=...): unpickles object arrays")
    return found


def product_files() -> list[Path]:
    return sorted(
        path
        for package in PACKAGES
        if (ROOT / package).is_dir()
        for path in (ROOT / package).rglob("*.py")
    )


def test_the_product_never_unpickles_a_file() -> None:
    files = product_files()
    assert len(files) > 50 and ROOT / "hps" / "checkpoints.py" in files
    found = [
        problem
        for path in files
        for problem in unsafe_loads(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert found == []


def test_the_product_still_loads_torch_files_safely() -> None:
    """The scan sees the real loader (so an empty result is not a blind scan)."""
    source = (ROOT / "hps" / "checkpoints.py").read_text()
    tree = ast.parse(source)
    aliases = _aliases(tree)
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _qualified(node.func, aliases) == "torch.load"
    ]
    assert calls and unsafe_loads(source) == []


@pytest.mark.parametrize(
    ("source", "count"),
    [
        ("import torch\ntorch.load(p)\n", 1),
        (  # what hps/training/trainer.py did before
            "import torch\nsaved = torch.load(path, map_location='cpu', weights_only=False)\n",
            1,
        ),
        ("import torch\ntorch.load(p, weights_only=False)\n", 1),
        ("import torch\ntorch . load(\n    p,\n    weights_only = False,\n)\n", 1),
        ("import torch as t\nt.load(p, map_location='cpu')\n", 1),
        ("from torch import load as l\nl(p)\n", 1),
        ("import torch\ntorch.serialization.load(p)\n", 1),
        ("import torch\ntorch.load(p, **options)\n", 1),
        ("import torch\nsafe = False\ntorch.load(p, weights_only=safe)\n", 1),
        ("import pickle\npickle.loads(b)\n", 1),
        ("import pickle as p\nwith open(f, 'rb') as h:\n    p.load(h)\n", 1),
        ("from pickle import loads\nloads(b)\n", 1),
        ("from pickle import Unpickler\nUnpickler(h).load()\n", 1),
        ("import numpy as np\nnp.load(f, allow_pickle=True)\n", 1),
        ("import pandas as pd\npd.read_pickle(f)\n", 1),
        ("def f():\n    import torch\n    return torch.load(p, weights_only=False)\n", 1),
        ("import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n", 0),
        ("import pickle\npickle.dumps(x)\n", 0),
        ("import numpy as np\nnp.load(f)\n", 0),
        ("import json\njson.load(h)\n", 0),
        ("# torch.load(p, weights_only=False)\ntext = 'pickle.loads(b)'\n", 0),
    ],
)
def test_the_scan_is_not_fooled_by_formatting(source: str, count: int) -> None:
    assert len(unsafe_loads(source)) == count, unsafe_loads(source)
