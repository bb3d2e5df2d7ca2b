"""`liqi dataset create|list|describe|ls|get|drop`: read-only, versioned inputs addressed
``odps://<project>/volumes/<volume>/<partition>`` (the seed's volumes)."""

from __future__ import annotations

from pathlib import Path

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table, when
from liqi.cli.transfer import human_size, progress_bar
from liqi.client.catalog import local_files


@click.group()
def dataset() -> None:
    """Datasets: read-only inputs, odps://<project>/volumes/<volume>/<partition>."""


@dataset.command()
@click.argument("uri")
@click.option(
    "--from",
    "source",
    required=True,
    help="A local directory, or an oss://bucket/prefix/ to copy on the server.",
)
@click.option("--force", "-f", is_flag=True, help="Replace it: make the next version.")
@click.option("--comment", "-c", default="", help="What the dataset holds.")
@output_option
@pass_cli
def create(obj: CliContext, uri: str, source: str, force: bool, comment: str, output: str) -> None:
    """Create dataset URI from a directory or an oss:// prefix."""
    total = None
    if not source.startswith("oss://"):
        total = sum(path.stat().st_size for _, path in local_files(Path(source)))
    with obj.client() as client, progress_bar(f"{source} -> {uri}", total) as progress:
        made = client.create_dataset(uri, source, force=force, comment=comment, progress=progress)
    if output == "json":
        echo_json(made)
    else:
        click.echo(
            f"Created {made.uri} version {made.version}: {made.file_count} file(s), "
            f"{human_size(made.size)}."
        )


@dataset.command(name="list")
@click.option("--project", "-p", help="Only this project's datasets.")
@output_option
@pass_cli
def list_(obj: CliContext, project: str | None, output: str) -> None:
    """List the datasets you may read, the built-in ones included."""
    with obj.client() as client:
        found = client.list_datasets(project)
    if output == "json":
        echo_json(found)
        return
    table(None, ["DATASET", "VERSION", "FILES", "SIZE", "CREATED", "COMMENT"],
          [(d.uri + (" (built-in)" if d.builtin else ""), d.version, d.file_count,
            human_size(d.size), when(d.created_at), d.comment) for d in found])  # fmt: skip


@dataset.command()
@click.argument("uri")
@output_option
@pass_cli
def describe(obj: CliContext, uri: str, output: str) -> None:
    """Show dataset URI."""
    with obj.client() as client:
        found = client.describe_dataset(uri)
    if output == "json":
        echo_json(found)
        return
    fields([("dataset", found.uri), ("version", found.version),
            ("files", found.file_count), ("size", f"{human_size(found.size)} ({found.size} bytes)"),
            ("built-in", "yes" if found.builtin else "no"), ("source", found.source),
            ("created", when(found.created_at)), ("comment", found.comment)])  # fmt: skip


@dataset.command()
@click.argument("uri")
@output_option
@pass_cli
def ls(obj: CliContext, uri: str, output: str) -> None:
    """List the files of dataset URI."""
    with obj.client() as client:
        found = client.list_dataset_files(uri)
    if output == "json":
        echo_json(found)
        return
    table(None, ["SIZE", "FILE"], [(human_size(f.size), f.path) for f in found])
    click.echo(f"{len(found)} file(s), {human_size(sum(f.size for f in found))}.")


@dataset.command()
@click.argument("uri")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@pass_cli
def get(obj: CliContext, uri: str, dest: Path) -> None:
    """Download every file of dataset URI into directory DEST."""
    with obj.client() as client:
        total = client.describe_dataset(uri).size
        with progress_bar(f"{uri} -> {dest}", total) as progress:
            written = client.download_dataset(uri, dest, progress=progress)
    click.echo(f"{uri} -> {dest}: {len(written)} file(s), {human_size(total)}.")


@dataset.command()
@click.argument("uri")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def drop(obj: CliContext, uri: str, yes: bool) -> None:
    """Delete dataset URI, every version of it."""
    if not yes:
        click.confirm(f"Drop dataset {uri} and all its versions?", abort=True)
    with obj.client() as client:
        client.drop_dataset(uri)
    click.echo(f"Dropped {uri}.")
