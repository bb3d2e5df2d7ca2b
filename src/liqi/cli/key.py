"""`liqi key create|list|revoke|grant`."""

from __future__ import annotations

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, output_option, table, when

role_choice = click.Choice(["admin", "member"])


@click.group()
def key() -> None:
    """Access keys: an access id and a secret that signs requests."""


@key.command()
@click.option("--project", "-p", help="Project the key belongs to (you must be its admin).")
@click.option(
    "--role",
    type=role_choice,
    default="member",
    show_default=True,
    help="Role in --project: admin manages the project and its keys.",
)
@click.option("--name", default="", help="A label to recognise the key by.")
@click.option("--superuser", is_flag=True, help="A key that may do everything (superuser only).")
@output_option
@pass_cli
def create(
    obj: CliContext, project: str | None, role: str, name: str, superuser: bool, output: str
) -> None:
    """Create an access key. Its secret is printed once: store it now."""
    with obj.client() as client:
        created = client.create_key(project=project, role=role, name=name, superuser=superuser)
    if output == "json":
        echo_json(created)
        return
    click.echo(f"Access id:  {created.access_id}")
    click.echo(f"Secret:     {created.secret}")
    click.echo("The secret is not shown again. Use it with `liqi config set access_key ...`.")


@key.command(name="list")
@click.option("--project", "-p", help="Only keys with a role in this project.")
@output_option
@pass_cli
def list_(obj: CliContext, project: str | None, output: str) -> None:
    """List the access keys you may manage."""
    with obj.client() as client:
        keys = client.list_keys(project)
    if output == "json":
        echo_json(keys)
        return
    rows = [
        (
            k.access_id,
            k.name,
            "yes" if k.is_superuser else "",
            ", ".join(f"{p}:{r}" for p, r in sorted(k.roles.items())),
            when(k.created_at),
            when(k.last_used_at),
            "revoked" if k.revoked_at else "active",
        )
        for k in keys
    ]
    table(None, ["ACCESS ID", "NAME", "SUPERUSER", "ROLES", "CREATED", "LAST USED", "STATE"], rows)


@key.command()
@click.argument("access_id")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def revoke(obj: CliContext, access_id: str, yes: bool) -> None:
    """Revoke ACCESS_ID: requests signed with it are refused from now on."""
    if not yes:
        click.confirm(f"Revoke access key {access_id}?", abort=True)
    with obj.client() as client:
        client.revoke_key(access_id)
    click.echo(f"Access key {access_id} revoked.")


@key.command()
@click.argument("access_id")
@click.option("--project", "-p", required=True, help="Project to grant a role in.")
@click.option(
    "--role",
    type=click.Choice(["admin", "member", "none"]),
    default="member",
    show_default=True,
    help="'none' removes the key's role in the project.",
)
@pass_cli
def grant(obj: CliContext, access_id: str, project: str, role: str) -> None:
    """Give ACCESS_ID a role in a project (needs that project's admin role)."""
    with obj.client() as client:
        if role == "none":
            client.remove_role(access_id, project)
            click.echo(f"Access key {access_id} has no role in {project} any more.")
        else:
            client.grant_role(access_id, project, role)
            click.echo(f"Access key {access_id} is now {role} of {project}.")
