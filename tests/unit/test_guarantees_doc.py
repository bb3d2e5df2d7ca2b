"""docs/guarantees.md states nothing that no test checks: every test it names exists, and every
promise (a bullet) names at least one test."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "guarantees.md"
NODE = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def _bullets(text: str) -> list[str]:
    """The promises: each top-level bullet with its continuation lines."""
    found: list[str] = []
    for line in text.splitlines():
        if line.startswith("- "):
            found.append(line)
        elif found and line.startswith("  ") and line.strip():
            found[-1] += " " + line.strip()
        elif not line.strip() and found and not found[-1].endswith("\n"):
            found[-1] += "\n"
    return found


def _test_names(source: Path) -> set[str]:
    """The tests a module defines or imports (a Ray module re-runs local tests by import)."""
    tree = ast.parse(source.read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def test_every_test_the_page_names_exists() -> None:
    missing = []
    for path, name in NODE.findall(DOC.read_text()):
        source = ROOT / path
        if not source.is_file():
            missing.append(path)
        elif name and name not in _test_names(source):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_promise_names_a_test() -> None:
    untested = [b[:80] for b in _bullets(DOC.read_text()) if not NODE.search(b)]
    assert untested == []
