"""The code's shape, checked: short functions, and no rewriting of the process's own arguments."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

MAX_LINES = 60
SOURCES = sorted((REPO / "mixalign").rglob("*.py"))


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def long_functions(path: Path) -> list[str]:
    return [f"{shown(path)}:{f.lineno} {f.name} ({f.end_lineno - f.lineno + 1} lines)"
            for f in functions(path) if f.end_lineno - f.lineno + 1 > MAX_LINES]


def argv_writes(path: Path) -> list[str]:
    """Assignments to sys.argv or its items, and in-place calls on it (append, insert, ...)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            targets = [node.func.value]
        for target in targets:
            while isinstance(target, ast.Subscript):
                target = target.value
            if ast.unparse(target) == "sys.argv":
                found.append(f"{shown(path)}:{node.lineno}")
    return found


def test_sources_were_found():
    assert len(SOURCES) > 20


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_function_over_sixty_lines_and_no_argv_rewriting(path):
    assert long_functions(path) == [] and argv_writes(path) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\n\ndef f():\n" + "    x = 1\n" * MAX_LINES + "\nsys.argv[1:] = ['fit']\nsys.argv.insert(1, 'x')\n")
    assert len(long_functions(bad)) == 1 and len(argv_writes(bad)) == 2


def test_ruff_is_clean():
    """The lint rules of pyproject.toml ([tool.ruff]) hold over the whole tree."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ruff", "check", "mixalign", "tests", "benchmarks", "scripts"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
