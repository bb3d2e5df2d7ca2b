"""How `liqi eas` prints services: eascmd's endpoint table and ``[OK]`` progress lines while
a change settles, ``desc`` fields, and the list, instance, version and event tables."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import click
from rich import box
from rich.table import Table

from liqi.cli.output import console, echo_json, fields, table, when
from liqi.client import Client
from liqi.client.services import ServiceEvent, ServiceInfo, ServiceVersionInfo
from liqi.errors import ModelUnavailableError

NO_TOKEN = "none (generate_token is false)"
RUNNING_OR_FAILED = frozenset({"RUNNING", "FAILED"})
STOPPED = frozenset({"STOPPED"})
EVENTS_SHOWN = 10

# What a state is doing while a command waits for it (eascmd: "[OK] Waiting [...]").
_PROGRESS = {
    "CREATING": "Waiting",
    "UPDATING": "Waiting",
    "SCALING": "Waiting",
    "STOPPING": "Stopping",
    "DELETING": "Deleting",
}


def key_table(rows: Sequence[tuple[str, str]], *, stderr: bool = False) -> None:
    """eascmd's two-column table: ``|  Endpoint | http://... |``."""
    grid = Table(show_header=False, box=box.ASCII, pad_edge=True)
    grid.add_column(justify="right", no_wrap=True)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    console(stderr=stderr).print(grid)


def token_text(info: ServiceInfo) -> str:
    if info.token:
        return info.token
    if info.token_required:
        return f"(hidden: `liqi eas token {info.name}`)"
    return NO_TOKEN


def endpoint_rows(info: ServiceInfo) -> list[tuple[str, str]]:
    rows = [("Endpoint", info.endpoint)]
    rows += [("Direct Endpoint", url) for url in info.direct_endpoints]
    rows.append(("Token", token_text(info)))
    return rows


class ProgressPrinter:
    """Prints one eascmd-style line per new step while a command waits (never the same line
    twice in a row). Lines go to stderr when stdout carries JSON."""

    def __init__(self, *, stderr: bool = False) -> None:
        self.stderr = stderr
        self.last = ""

    def line(self, text: str) -> None:
        if text != self.last:
            self.last = text
            click.echo(text, err=self.stderr)

    def __call__(self, info: ServiceInfo) -> None:
        verb = _PROGRESS.get(info.state)
        if verb is None or not info.reason:  # settled: the final line says how it ended
            return
        self.line(f"[OK] {verb} [{info.reason}]")

    def final(self, info: ServiceInfo) -> None:
        if info.state == "RUNNING":
            if info.direct_endpoints:
                key_table(
                    [("Direct Endpoint", u) for u in info.direct_endpoints], stderr=self.stderr
                )
            self.line("[OK] Service is running")
        elif info.state == "STOPPED":
            self.line("[OK] Service is stopped")
        elif info.state == "FAILED":
            self.line(f"[FAILED] {info.reason}")
        else:
            self.line(f"[OK] Service is {info.state}")


def settle(
    client: Client,
    info: ServiceInfo,
    first_line: str,
    *,
    timeout_s: float,
    stderr: bool,
    until: Collection[str] | None = None,
) -> ServiceInfo:
    """Print progress lines until the service has settled; returns it as it ended."""
    if until is None:
        # A change to a stopped service (scale, modify, rollback) takes effect on `start`.
        stopped = info.state in ("STOPPED", "STOPPING")
        until = STOPPED if stopped else RUNNING_OR_FAILED
    printer = ProgressPrinter(stderr=stderr)
    printer.line(first_line)
    final = client.wait_service(info.name, timeout_s=timeout_s, until=until, on_change=printer)
    printer.final(final)
    return final


def finish(info: ServiceInfo, output: str) -> None:
    """Print the JSON (with -o json); a FAILED service ends the command with exit 6."""
    if output == "json":
        echo_json(info)
    if info.state == "FAILED":
        raise ModelUnavailableError(
            f"Service {info.name!r} FAILED: {info.reason.rstrip('.')}. See "
            f"`liqi eas events {info.name}` "
            f"and `liqi eas logs {info.name}`."
        )


def warnings(info: ServiceInfo) -> None:
    for text in info.warnings:
        click.echo(f"[WARNING] {text}", err=True)


def describe(info: ServiceInfo) -> None:
    autoscaler = info.autoscaler
    fields(
        [
            ("name", info.name),
            ("project", info.project),
            ("state", info.state),
            ("reason", info.reason or None),
            ("endpoint", info.endpoint),
            ("direct endpoints", "\n".join(info.direct_endpoints) or None),
            ("token required", "yes" if info.token_required else "no"),
            ("version", f"{info.current_version} (latest {info.latest_version})"),
            ("instances", f"{info.instances_ready} ready of {info.instances_wanted} wanted"),
            ("model_path", info.model_path),
            ("processor", info.processor),
            ("cpu", f"{info.cpu:g}" if info.cpu is not None else None),
            ("memory", f"{info.memory_mb} MB" if info.memory_mb is not None else None),
            ("autoscaler", _autoscaler(autoscaler) if autoscaler else None),
            ("created", f"{when(info.created_at)} by {info.created_by}"),
            ("updated", when(info.updated_at)),
        ]
    )
    if info.instances:
        rows = [
            (i.id, i.version, i.state, i.url or None, i.restarts, when(i.ready_at), i.reason)
            for i in info.instances
        ]
        table(
            "Instances",
            ["INSTANCE", "VERSION", "STATE", "URL", "RESTARTS", "READY", "REASON"],
            rows,
        )
    if info.events:
        events_table(
            info.events[-EVENTS_SHOWN:], title=f"Last events (`liqi eas events {info.name}`)"
        )


def _autoscaler(config: dict[str, object]) -> str:
    parts = [f"min {config.get('min', '-')}", f"max {config.get('max', '-')}"]
    strategies = config.get("strategies")
    if isinstance(strategies, dict) and "qps" in strategies:
        parts.append(f"qps {strategies['qps']} per instance")
    return ", ".join(parts)


def service_list(found: Sequence[ServiceInfo]) -> None:
    rows = [
        (
            s.name,
            s.project,
            s.state,
            f"{s.instances_ready}/{s.instances_wanted}",
            s.current_version,
            s.endpoint,
            when(s.updated_at),
        )
        for s in found
    ]
    table(None, ["SERVICE", "PROJECT", "STATE", "READY", "VERSION", "ENDPOINT", "UPDATED"], rows)


def versions_table(found: Sequence[ServiceVersionInfo]) -> None:
    rows = [
        (
            v.version,
            "*" if v.current else "",
            v.config.get("model_path"),
            _instances_of(v.config),
            v.created_by,
            when(v.created_at),
        )
        for v in found
    ]
    table(None, ["VERSION", "CURRENT", "MODEL_PATH", "INSTANCES", "BY", "CREATED"], rows)


def _instances_of(config: dict[str, object]) -> object:
    metadata = config.get("metadata")
    return metadata.get("instance", 1) if isinstance(metadata, dict) else 1


def events_table(found: Sequence[ServiceEvent], title: str | None = None) -> None:
    table(title, ["TIME", "LEVEL", "MESSAGE"], [(when(e.at), e.level, e.message) for e in found])
