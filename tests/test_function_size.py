"""No function or method of the product is longer than 80 lines (issue 13: short functions).

Measured on the syntax tree (``ast``) from the ``def`` line to the function's last line,
docstring and nested functions included, decorators not. Migrations, tests and benchmarks
are not product code and are not checked.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from tests.project import PRODUCT_PACKAGES, ROOT

PACKAGES = PRODUCT_PACKAGES
MAX_LINES = 80


@dataclass(frozen=True)
class FunctionSize:
    path: str
    line: int
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name} {self.lines} lines"


def function_sizes(source: str, path: str = "<source>") -> list[FunctionSize]:
    """Every function and method in ``source`` (nested ones too), with its length in lines."""
    sizes: list[FunctionSize] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = f"{prefix}{child.name}"
                end = child.end_lineno or child.lineno
                sizes.append(FunctionSize(path, child.lineno, name, end - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return sizes


def product_files() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_no_function_is_longer_than_80_lines() -> None:
    sizes = [
        size
        for path in product_files()
        for size in function_sizes(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert len(sizes) > 500  # the walk sees the product (an empty scan proves nothing)
    too_long = sorted((s for s in sizes if s.lines > MAX_LINES), key=lambda s: -s.lines)
    assert not too_long, "functions over 80 lines:\n" + "\n".join(map(str, too_long))


def test_the_measure_counts_def_to_last_line_and_names_methods() -> None:
    source = (
        "@decorator\n"
        "def outer():\n"
        '    """Doc."""\n'
        "    def inner():\n"
        "        return 1\n"
        "\n"
        "    return inner\n"
        "\n"
        "class Thing:\n"
        "    async def method(self):\n"
        "        pass\n"
    )
    assert [(s.name, s.line, s.lines) for s in function_sizes(source)] == [
        ("outer", 2, 6),
        ("outer.inner", 4, 2),
        ("Thing.method", 10, 2),
    ]
