"""`liqi pai -name <framework> -D<key>=<value> ...`: PAI-TF's command, run as a liqi job.

The same translation serves `pai ...;` statements in `liqi console`.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.job import FAILED_EXIT, script_uri, stream_until_done
from liqi.cli.output import echo_json
from liqi.client import Client
from liqi.client.jobs import JobInfo
from liqi.core.odps import parse_resource_uri
from liqi.core.pai_command import ClusterSpec, PaiCommand, parse_hyper_parameters, parse_pai
from liqi.core.refs import parse_oss_uri


def _oss(text: str) -> str:
    """PAI also writes ``oss://<bucket>.<host>/key``; keep the bucket, drop the host."""
    try:
        parts = urlsplit(text)
    except ValueError:  # an unbalanced '[' or ']'
        parse_oss_uri(text)  # raises InvalidRequestError, saying so
        raise
    if parts.scheme == "oss" and "." in parts.netloc:
        text = text.replace(parts.netloc, parts.netloc.split(".", 1)[0], 1)
    parse_oss_uri(text)
    return text


def _folder(text: str) -> str:
    uri = parse_oss_uri(_oss(text))
    key = uri.key if uri.is_folder else uri.key + "/"
    return f"oss://{uri.bucket}/{key}"


def _hyper_parameters(client: Client, ref: str) -> dict[str, str]:
    if ref.startswith("oss://"):
        uri = parse_oss_uri(_oss(ref))
        text = client.read_object(uri.bucket, uri.key).decode("utf-8")
    elif ref.startswith("odps://"):
        res = parse_resource_uri(ref)
        with tempfile.TemporaryDirectory() as tmp:
            path = client.get_resource(res.name, Path(tmp), project=res.project)
            text = path.read_text(encoding="utf-8")
    else:
        text = Path(ref.removeprefix("file://")).expanduser().read_text(encoding="utf-8")
    return parse_hyper_parameters(text, ref)


def job_request(client: Client, cmd: PaiCommand, project: str | None) -> tuple[str, dict[str, Any]]:
    """The job a PAI command describes: its script URI and the options of ``submit_job``."""
    script = cmd.script
    if script.startswith("oss://"):
        script = _oss(script)
    elif not script.startswith("odps://"):
        script = script_uri(client, script, project, cmd.resource_group)
    options: dict[str, Any] = {
        "name": cmd.job_name or script.rstrip("/").rsplit("/", 1)[-1],
        "project": project,
        "entry_file": cmd.entry_file,
        "args": list(cmd.user_defined_parameters),
        "datasets": list(cmd.volumes),
        "tables": list(cmd.tables),
        "outputs": list(cmd.outputs),
        "buckets": [_folder(b) for b in cmd.buckets],
        "checkpoint_dir": _folder(cmd.checkpoint_dir) if cmd.checkpoint_dir else None,
        "hyper_parameters": (
            _hyper_parameters(client, cmd.hyper_parameters) if cmd.hyper_parameters else {}
        ),
        "resources": {"gpu": cmd.gpus},
        "tf1_compat": cmd.framework_kind == "tf1",
    }
    if cmd.resource_group is not None:
        options["resource_group"] = cmd.resource_group
    if cmd.cluster is not None:
        options["cluster"] = cluster_options(cmd.cluster)
    return script, options


def cluster_options(cluster: ClusterSpec) -> dict[str, Any]:
    """``-Dcluster`` as the API's ``cluster``: counts, CPUs (PAI counts 100 per core), MB."""
    options: dict[str, Any] = {"ps": cluster.ps_count, "workers": cluster.worker_count}
    for role, cpu, memory_mb in (
        ("ps", cluster.ps_cpu, cluster.ps_memory_mb),
        ("worker", cluster.worker_cpu, cluster.worker_memory_mb),
    ):
        if cpu:
            options[f"{role}_cpu"] = cpu / 100
        if memory_mb:
            options[f"{role}_memory_mb"] = memory_mb
    if cluster.placement != "PACK":
        options["placement"] = cluster.placement
    return options


def run_pai(client: Client, cmd: PaiCommand, project: str | None, *, wait: bool = True) -> JobInfo:
    """Submit the command's job and, with ``wait``, stream its output to its final state."""
    for warning in cmd.warnings:
        click.echo(f"Warning: {warning}", err=True)
    if cmd.gpus:
        click.echo(
            f"Warning: -DgpuRequired={cmd.gpu_required} asks for {cmd.gpus} GPU(s); the local "
            "backend runs on the CPUs of this machine.",
            err=True,
        )
    script, options = job_request(client, cmd, project)
    job = client.submit_job(script, **options)
    click.echo(f"ID = {job.id}", err=True)
    if not wait:
        return job
    return stream_until_done(client, job.id)


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("words", nargs=-1, type=click.UNPROCESSED)
@click.option("--project", "-p", help="Project to run in [default: the profile's].")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Stream the job's output until it ends (exit 8 when it did not succeed).",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="With json, print the final job as JSON.",
)
@pass_cli
def pai(obj: CliContext, words: tuple[str, ...], project: str | None, wait: bool,
        output: str) -> None:  # fmt: skip
    """Run PAI-TF's command: -name <framework> -Dscript=... -Dvolumes=... -Dbuckets=...

    \b
    Example (the seed's training step):
      liqi pai -name tensorflow121 \\
        -Dscript=odps://my_project/resources/mnist_softmax.py \\
        -Dvolumes=odps://algo_platform/volumes/mnist/train \\
        -Dbuckets="oss://wuji-xwt/models/?role_arn=acs:ram::123:role/x&host=oss.example.com"
    """
    cmd = parse_pai(list(words))
    with obj.client() as client:
        final = run_pai(client, cmd, project, wait=wait)
    if output == "json":
        echo_json(final)
    if wait and final.state != "SUCCEEDED":
        sys.exit(FAILED_EXIT)
