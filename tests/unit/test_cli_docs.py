"""docs/cli.md is generated from the click commands; it must not fall behind them."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import click
import pytest

from liqi.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen-cli-docs"


def generator() -> dict[str, Any]:
    return runpy.run_path(str(SCRIPT), run_name="gen_cli_docs")


def test_cli_docs_are_in_sync() -> None:
    ok, message = generator()["check"]()
    assert ok, message


def test_every_command_has_a_section() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")

    def paths(command: click.Command, prefix: str) -> list[str]:
        found = [prefix]
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                if not sub.hidden:
                    found += paths(sub, f"{prefix} {name}")
        return found

    missing = [p for p in paths(cli, "liqi") if f"\n## {p}\n" not in text]
    assert not missing, f"docs/cli.md has no section for: {', '.join(missing)}"


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("# liqi command reference\n", encoding="utf-8")
    ok, message = generator()["check"](stale)
    assert not ok
    assert "gen-cli-docs" in message


def test_output_does_not_depend_on_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    render = generator()["render"]
    monkeypatch.setenv("COLUMNS", "200")
    wide = render(cli)
    monkeypatch.setenv("COLUMNS", "20")
    assert render(cli) == wide
