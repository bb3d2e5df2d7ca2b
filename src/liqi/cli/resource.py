"""`liqi resource add|list|describe|get|drop`: files added to a project, as ODPS's
``add file|py|archive|jar``, addressed ``odps://<project>/resources/<name>``."""

from __future__ import annotations

from pathlib import Path

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table, when
from liqi.cli.transfer import human_size, progress_bar
from liqi.client.catalog import ResourceInfo
from liqi.core.odps import KINDS, parse_resource_uri

project_option = click.option(
    "--project", "-p", help="Project of the resource [default: the profile's]."
)


def _target(name: str, project: str | None) -> tuple[str, str | None]:
    """NAME, or odps://<project>/resources/<name> (whose project wins over --project)."""
    if name.startswith("odps://"):
        uri = parse_resource_uri(name)
        return uri.name, uri.project
    return name, project


def _fields(found: ResourceInfo) -> None:
    fields([("resource", found.uri), ("type", found.kind),
            ("size", f"{human_size(found.size)} ({found.size} bytes)"), ("sha256", found.sha256),
            ("created", when(found.created_at)), ("updated", when(found.updated_at)),
            ("comment", found.comment)])  # fmt: skip


@click.group()
def resource() -> None:
    """Resources: scripts and files added to a project (ODPS `add file`)."""


@resource.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--as", "name", help="Name of the resource [default: the file's name].")
@click.option("--comment", "-c", default="", help="What the resource is.")
@click.option("--force", "-f", is_flag=True, help="Replace a resource of the same name.")
@click.option(
    "--type",
    "kind",
    type=click.Choice(KINDS),
    help="Resource type [default: from the name: .py py, .jar jar, "
    ".tar.gz/.tgz/.zip/.tar archive, else file].",
)
@project_option
@output_option
@pass_cli
def add(obj: CliContext, file: Path, name: str | None, comment: str, force: bool,
        kind: str | None, project: str | None, output: str) -> None:  # fmt: skip
    """Add FILE to the project as a resource (at most 2 GiB)."""
    size = file.stat().st_size
    with obj.client() as client, progress_bar(f"{file.name} -> resource", size) as progress:
        added = client.add_resource(
            file, name, kind, comment, force, progress=progress, project=project
        )
    if output == "json":
        echo_json(added)
    else:
        click.echo(f"Added {added.uri} ({added.kind}, {human_size(added.size)}).")


@resource.command(name="list")
@project_option
@output_option
@pass_cli
def list_(obj: CliContext, project: str | None, output: str) -> None:
    """List the resources of the project."""
    with obj.client() as client:
        found = client.list_resources(project)
    if output == "json":
        echo_json(found)
        return
    table(None, ["NAME", "TYPE", "SIZE", "UPDATED", "COMMENT"],
          [(r.name, r.kind, human_size(r.size), when(r.updated_at), r.comment)
           for r in found])  # fmt: skip


@resource.command()
@click.argument("name")
@project_option
@output_option
@pass_cli
def describe(obj: CliContext, name: str, project: str | None, output: str) -> None:
    """Show resource NAME (or odps://<project>/resources/<name>)."""
    chosen, project = _target(name, project)
    with obj.client() as client:
        found = client.describe_resource(chosen, project=project)
    if output == "json":
        echo_json(found)
    else:
        _fields(found)


@resource.command()
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@project_option
@pass_cli
def get(obj: CliContext, name: str, dest: Path, project: str | None) -> None:
    """Download resource NAME to DEST (a file, or a directory to put it in)."""
    chosen, project = _target(name, project)
    with obj.client() as client:
        size = client.describe_resource(chosen, project=project).size
        with progress_bar(f"{chosen} -> {dest.name or dest}", size) as progress:
            written = client.get_resource(chosen, dest, project=project, progress=progress)
    click.echo(f"{chosen} -> {written} ({human_size(size)})")


@resource.command()
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@project_option
@pass_cli
def drop(obj: CliContext, name: str, yes: bool, project: str | None) -> None:
    """Delete resource NAME."""
    chosen, project = _target(name, project)
    if not yes:
        click.confirm(f"Drop resource {chosen}?", abort=True)
    with obj.client() as client:
        client.drop_resource(chosen, project=project)
    click.echo(f"Dropped resource {chosen}.")
