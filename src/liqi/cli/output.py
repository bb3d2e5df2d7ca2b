"""Rendering results: rich tables for people, JSON for scripts (``--output json``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console
from rich.table import Table

F = TypeVar("F", bound=Callable[..., Any])

output_option = click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Print a table for people or JSON for scripts.",
)


def console(*, stderr: bool = False) -> Console:
    # Piped output keeps whole values (ids, URLs) on one line instead of wrapping at 80.
    probe = Console(stderr=stderr)
    return Console(highlight=False, stderr=stderr, width=None if probe.is_terminal else 200)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def echo_json(value: Any) -> None:
    click.echo(
        orjson.dumps(_plain(value), option=orjson.OPT_INDENT_2 | orjson.OPT_NAIVE_UTC).decode()
    )


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    grid = Table(title=title, title_justify="left", show_lines=False)
    for column in columns:
        grid.add_column(column, overflow="fold")
    for row in rows:
        grid.add_row(*("-" if v is None else str(v) for v in row))
    console().print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in pairs:
        grid.add_row(key, "-" if value is None else str(value))
    console().print(grid)
