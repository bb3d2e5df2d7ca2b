"""`liqi project create|list|describe|delete`."""

from __future__ import annotations

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table, when


@click.group()
def project() -> None:
    """Projects: the namespaces every object belongs to."""


@project.command()
@click.argument("name")
@click.option("--description", "-d", default="", help="What the project is for.")
@output_option
@pass_cli
def create(obj: CliContext, name: str, description: str, output: str) -> None:
    """Create project NAME (needs a superuser key)."""
    with obj.client() as client:
        created = client.create_project(name, description)
    if output == "json":
        echo_json(created)
    else:
        click.echo(f"Project {created.name} created.")


@project.command(name="list")
@output_option
@pass_cli
def list_(obj: CliContext, output: str) -> None:
    """List the projects your access key has a role in."""
    with obj.client() as client:
        projects = client.list_projects()
    if output == "json":
        echo_json(projects)
        return
    table(
        None,
        ["NAME", "ROLE", "CREATED", "DESCRIPTION"],
        [(p.name, p.role, when(p.created_at), p.description) for p in projects],
    )


@project.command()
@click.argument("name")
@output_option
@pass_cli
def describe(obj: CliContext, name: str, output: str) -> None:
    """Show project NAME."""
    with obj.client() as client:
        found = client.get_project(name)
    if output == "json":
        echo_json(found)
        return
    fields(
        [
            ("name", found.name),
            ("role", found.role),
            ("created", when(found.created_at)),
            ("description", found.description),
        ]
    )


@project.command()
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def delete(obj: CliContext, name: str, yes: bool) -> None:
    """Delete project NAME and everything in it (needs its admin role)."""
    if not yes:
        click.confirm(f"Delete project {name} and everything in it?", abort=True)
    with obj.client() as client:
        client.delete_project(name)
    click.echo(f"Project {name} deleted.")
