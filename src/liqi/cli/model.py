"""`liqi model list|describe|versions`: models registered from jobs."""

from __future__ import annotations

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table, when


@click.group()
def model() -> None:
    """Models: named streams of versions that jobs export (TF Serving layout)."""


@model.command(name="list")
@click.option("--project", "-p", help="Only this project's models.")
@output_option
@pass_cli
def list_(obj: CliContext, project: str | None, output: str) -> None:
    """List models with their latest version."""
    with obj.client() as client:
        found = client.list_models(project)
    if output == "json":
        echo_json(found)
        return
    rows = [
        (m.name, m.project, m.latest_version, len(m.versions), when(m.created_at)) for m in found
    ]
    table(None, ["MODEL", "PROJECT", "LATEST", "VERSIONS", "CREATED"], rows)


@model.command()
@click.argument("name")
@click.option("--project", "-p", help="Project of the model [default: the profile's].")
@output_option
@pass_cli
def describe(obj: CliContext, name: str, project: str | None, output: str) -> None:
    """Show a model and where its latest version is."""
    with obj.client() as client:
        found = client.get_model(name, project=project)
    if output == "json":
        echo_json(found)
        return
    latest = found.versions[-1] if found.versions else None
    fields(
        [
            ("model", found.name),
            ("project", found.project),
            ("latest version", found.latest_version),
            ("latest uri", latest.uri if latest else None),
            ("from job", latest.job_id if latest else None),
            ("created", when(found.created_at)),
        ]
    )


@model.command()
@click.argument("name")
@click.option("--project", "-p", help="Project of the model [default: the profile's].")
@output_option
@pass_cli
def versions(obj: CliContext, name: str, project: str | None, output: str) -> None:
    """List a model's versions with their URIs and the jobs that made them."""
    with obj.client() as client:
        found = client.get_model(name, project=project)
    if output == "json":
        echo_json(found.versions)
        return
    rows = [(v.version, v.uri, v.job_id, when(v.created_at)) for v in found.versions]
    table(None, ["VERSION", "URI", "JOB", "CREATED"], rows)
