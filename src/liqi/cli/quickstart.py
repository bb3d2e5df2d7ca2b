"""`liqi quickstart`: the main job end to end on the embedded defaults."""

from __future__ import annotations

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import fields, table, when
from liqi.control import daemon
from liqi.errors import NotFoundError

QUICKSTART_PROJECT = "quickstart"


@click.command()
@click.option("--host", default=None, help="Address for the server [default 127.0.0.1].")
@click.option(
    "--port", type=int, default=None, help="Port for the server [default 8080; 0 picks a free one]."
)
@pass_cli
def quickstart(obj: CliContext, host: str | None, port: int | None) -> None:
    """Start a local server, create a project and show what runs.

    Safe to run again: it reuses a running server and an existing project.
    """
    settings = obj.server_settings(host, port)
    click.echo(f"[1/3] Starting the control plane (home {settings.home}) ...")
    status = daemon.start_server(settings)
    record = status.record
    assert record is not None
    click.echo(f"      running at {record.url} (pid {record.pid})")
    click.echo(f"[2/3] Creating project {QUICKSTART_PROJECT} ...")
    with obj.client() as client:
        try:
            client.get_project(QUICKSTART_PROJECT)
            click.echo("      already there")
        except NotFoundError:
            client.create_project(QUICKSTART_PROJECT, "Created by `liqi quickstart`.")
            click.echo("      created")
        info = client.server_info()
        projects = client.list_projects()
    click.echo("[3/3] Status")
    fields(
        [
            ("server", f"liqi {info.version} at {record.url}"),
            ("pid", info.pid),
            ("uptime", f"{info.uptime_s:.0f}s"),
            ("database", info.database),
            ("home", str(settings.home)),
            ("profile", str(obj.profile_path)),
        ]
    )
    table(
        "Projects",
        ["NAME", "ROLE", "CREATED"],
        [(p.name, p.role, when(p.created_at)) for p in projects],
    )
    click.echo("Next: `liqi project list`, `liqi server status`; stop with `liqi server stop`.")
