"""`liqi server run|start|stop|status|logs`: the control plane."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from liqi._logging import configure_logging
from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option
from liqi.config import DEFAULT_HOST, DEFAULT_PORT, ISOLATIONS, ServerSettings
from liqi.control.server import daemon

host_option = click.option(
    "--host", default=None, help=f"Address to bind [env LIQI_HOST; default {DEFAULT_HOST}]."
)
port_option = click.option(
    "--port",
    type=int,
    default=None,
    help=f"Port to bind; 0 picks a free one [env LIQI_PORT; default {DEFAULT_PORT}].",
)

cors_option = click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Let web pages from this origin (e.g. http://127.0.0.1:8000; * for any) call the API "
    "and the services' gateway from a browser; repeat for several [env LIQI_CORS_ORIGINS, "
    "comma-separated].",
)

isolation_option = click.option(
    "--isolation",
    type=click.Choice(ISOLATIONS),
    default=None,
    help="How job tasks run: 'sandbox' (their own user, namespaces and cgroup; needs "
    "bubblewrap and cgroups) or 'none' (as the server's user) [env LIQI_ISOLATION; default "
    "sandbox where this machine can].",
)


def _isolation(settings: ServerSettings) -> tuple[str, str]:
    from liqi.sandbox import choose_isolation

    return choose_isolation(settings.isolation)


@click.group()
def server() -> None:
    """Run and manage the control plane (`liqi server start` to begin)."""


@server.command()
@host_option
@port_option
@cors_option
@isolation_option
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write all output to this file, rotated at LIQI_LOG_MAX_MB into FILE.1 ... FILE.N "
    "(LIQI_LOG_BACKUPS) [default: stdout and stderr].",
)
@pass_cli
def run(
    obj: CliContext,
    host: str | None,
    port: int | None,
    cors_origins: tuple[str, ...],
    isolation: str | None,
    log_file: Path | None,
) -> None:
    """Run the control plane in the foreground until Ctrl-C or SIGTERM."""
    settings = obj.server_settings(host, port, cors_origins, isolation)
    if log_file is not None:
        from liqi.logs.capture import capture_output

        try:
            capture_output(log_file, settings.log_limits)
        except OSError as exc:
            message = f"Cannot write {log_file} through a log writer ({exc}); output stays here."
            click.echo(message, err=True)
    configure_logging(logging.DEBUG if obj.debug else logging.INFO)
    from liqi.control.server.runtime import run_server  # FastAPI and the database: only here

    run_server(settings)


@server.command()
@host_option
@port_option
@cors_option
@isolation_option
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=daemon.START_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the server to answer its health check.",
)
@pass_cli
def start(
    obj: CliContext,
    host: str | None,
    port: int | None,
    cors_origins: tuple[str, ...],
    isolation: str | None,
    timeout_s: float,
) -> None:
    """Start the control plane in the background; return once it is healthy."""
    settings = obj.server_settings(host, port, cors_origins, isolation)
    mode, warning = _isolation(settings)
    before = daemon.server_status(settings)
    status = daemon.start_server(settings, timeout_s=timeout_s)
    url = status.record.url if status.record else "?"
    pid = status.record.pid if status.record else "?"
    if before.running:
        click.echo(f"liqi server is already running (pid {pid}, {url}); nothing to start.")
        if cors_origins:
            click.echo("Its settings stay as they were: `liqi server stop` first to change them.")
    else:
        if before.stale_cleaned:
            click.echo("Removed a stale pid file left by a server that is gone.")
        click.echo(f"liqi server started (pid {pid}) at {url}")
        click.echo(f"Home: {settings.home}   Log: {daemon.log_file(settings)}")
        click.echo(f"Isolation: {mode}")
    if warning:
        click.echo(f"Warning: {warning}", err=True)


@server.command()
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=daemon.STOP_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for in-flight requests before killing the server.",
)
@pass_cli
def stop(obj: CliContext, timeout_s: float) -> None:
    """Stop the background control plane gracefully.

    Service instances keep running (the next start re-adopts them); `liqi eas stop NAME`
    stops a service's instances.
    """
    settings = obj.server_settings()
    stopped = daemon.stop_server(settings, timeout_s=timeout_s)
    if stopped is None:
        click.echo("liqi server is not running.")
    else:
        pid = stopped.record.pid if stopped.record else "?"
        click.echo(f"liqi server stopped (pid {pid}).")
    running = _instances_running(settings.home / "services")
    if running:
        click.echo(
            f"{running} service instance(s) keep running; the next `liqi server start` takes "
            "them back. Stop a service first with `liqi eas stop NAME` to end them."
        )


def _instances_running(services_dir: Path) -> int:
    """Model-server processes working in this home's services folder (bwrap's own init in
    a sandboxed instance's folder is not one)."""
    import psutil

    prefix = str(services_dir) + "/"
    count = 0
    for process in psutil.process_iter(["cwd", "status", "name"]):
        cwd = process.info.get("cwd") or ""
        if (
            cwd.startswith(prefix)
            and process.info.get("status") != psutil.STATUS_ZOMBIE
            and process.info.get("name") != "bwrap"
        ):
            count += 1
    return count


def _groups(settings: ServerSettings) -> list[dict[str, object]]:
    """The resource groups of these settings, each with its health (a Ray dashboard asked for
    its version, 2 s at most)."""
    from liqi.resource_groups import probe

    return [
        {
            "name": group.name,
            "backend": group.backend,
            "address": group.address or None,
            "default": group.name == settings.resource_group,
            "projects": [p for p, g in settings.project_groups if g == group.name],
            "health": probe(group, timeout_s=2.0),
        }
        for group in settings.resource_groups
    ]


@server.command()
@output_option
@pass_cli
def status(obj: CliContext, output: str) -> None:
    """Show whether the control plane is running, with pid, URL, version and uptime, and the
    resource groups jobs and services may run in (with each one's health and the projects
    whose default it is)."""
    settings = obj.server_settings()
    state = daemon.server_status(settings)
    mode, warning = _isolation(settings)
    groups = _groups(settings)
    if output == "json":
        echo_json(
            {
                **state.as_dict(),
                "isolation": mode,
                "isolation_warning": warning or None,
                "resource_groups": groups,
            }
        )
        return
    if state.stale_cleaned:
        click.echo("Removed a stale pid file left by a server that is gone.")
    info = state.as_dict()
    uptime = info["uptime_s"]
    fields(
        [
            ("status", "running" if state.running else "stopped"),
            ("pid", info["pid"]),
            ("url", info["url"]),
            ("version", info["version"]),
            ("uptime", f"{uptime:.0f}s" if isinstance(uptime, float) else None),
            ("home", info["home"]),
            ("isolation", mode),
        ]
    )
    click.echo("resource groups:")
    for group in groups:
        where = f" at {group['address']}" if group["address"] else ""
        default = " (default)" if group["default"] else ""
        projects = group["projects"]
        assert isinstance(projects, list)
        owners = f"; default of project(s) {', '.join(projects)}" if projects else ""
        click.echo(
            f"  {group['name']}{default}: {group['backend']}{where}, {group['health']}{owners}"
        )
    if warning:
        click.echo(f"Warning: {warning}", err=True)


@server.command()
@click.option("-n", "lines", type=int, default=50, show_default=True, help="Lines from the end.")
@pass_cli
def logs(obj: CliContext, lines: int) -> None:
    """Print the end of the background server's log."""
    from liqi.logs.reading import tail_lines

    path = daemon.log_file(obj.server_settings())
    if not path.exists():
        click.echo(f"No log yet at {path}.")
        return
    click.echo("\n".join(tail_lines(path, lines)))
