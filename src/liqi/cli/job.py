"""`liqi job submit|list|status|logs|wait|kill`: training jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table, when
from liqi.client import Client
from liqi.client.jobs import JobInfo
from liqi.errors import InvalidRequestError

FAILED_EXIT = 8


def script_uri(client: Client, script: str, project: str | None, group: str | None) -> str:
    """``odps://`` and ``oss://`` scripts as they are; a local file is added as a resource of
    the project (replacing one of the same name) and addressed by its ``odps://`` URI, once
    the job's resource ``group`` (None: the server's default) is known to take jobs now."""
    if script.startswith(("odps://", "oss://")):
        return script
    path = Path(script.removeprefix("file://")).expanduser()
    if not path.is_file():
        raise InvalidRequestError(
            f"Script {script!r} is not a file here, nor odps://<project>/resources/<name> "
            "nor oss://<bucket>/<key>."
        )
    client.check_resource_group(group, project)  # a job that cannot run uploads nothing
    added = client.add_resource(path, force=True, project=project)
    click.echo(f"Uploaded {path} as {added.uri}", err=True)
    return added.uri


def stream_until_done(client: Client, job_id: str) -> JobInfo:
    """Print the job's output as it comes, then its final state; returns the final job."""
    for text in client.follow_logs(job_id):
        sys.stdout.write(text)
        sys.stdout.flush()
    job = client.wait_job(job_id)
    click.echo(f"Job {job.id} {job.state}" + (f": {job.reason}" if job.reason else ""), err=True)
    return job


def _env_pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequestError(f"--env {item!r} must be KEY=VALUE.")
        pairs[key] = value
    return pairs


@click.group()
def job() -> None:
    """Training jobs: run a script with datasets and buckets, watch it, stop it."""


@job.command()
@click.argument("script")
@click.argument("args", nargs=-1)
@click.option("--name", help="Job name [default: the script's file name].")
@click.option("--project", "-p", help="Project to run in [default: the profile's].")
@click.option("--dataset", "datasets", multiple=True, help="odps://<p>/volumes/<v>/<part>; repeat.")
@click.option(
    "--bucket", "buckets", multiple=True, help="oss://<bucket>/<folder>/ the job writes; repeat."
)
@click.option("--checkpoint-dir", help="oss://<bucket>/<folder>/ for checkpoints.")
@click.option("--entry-file", help="The file to run inside a .tar.gz or .zip script.")
@click.option("--env", "env", multiple=True, help="KEY=VALUE for the script's environment; repeat.")
@click.option("--memory-mb", type=click.IntRange(min=1), help="Kill the job past this memory.")
@click.option(
    "--timeout-s", type=click.FloatRange(min=0, min_open=True), help="Kill the job after this."
)
@click.option("--ps", type=click.IntRange(0, 16), default=0, help="Parameter-server tasks.")
@click.option("--workers", type=click.IntRange(1, 32), default=1, help="Worker tasks.")
@click.option("--tf1", is_flag=True, help="Run a TensorFlow 1.x script through tf.compat.v1.")
@click.option("--model-name", help="Register a SavedModel the job writes under this name.")
@click.option(
    "--resource-group",
    help="Where to run: local or a Ray group (`liqi server status` lists them) [default: the "
    "server's].",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Stream the output until the job ends (exit 8 when it did not succeed).",
)
@output_option
@pass_cli
def submit(obj: CliContext, script: str, args: tuple[str, ...], name: str | None,
           project: str | None, datasets: tuple[str, ...], buckets: tuple[str, ...],
           checkpoint_dir: str | None, entry_file: str | None, env: tuple[str, ...],
           memory_mb: int | None, timeout_s: float | None, ps: int, workers: int, tf1: bool,
           model_name: str | None, resource_group: str | None, wait: bool,
           output: str) -> None:  # fmt: skip
    """Run SCRIPT (a local file, odps://.../resources/<name> or oss://...) with ARGS."""
    options: dict[str, Any] = {
        "args": list(args),
        "datasets": list(datasets),
        "buckets": list(buckets),
        "checkpoint_dir": checkpoint_dir,
        "entry_file": entry_file,
        "env": _env_pairs(env),
        "resources": {"memory_mb": memory_mb, "timeout_s": timeout_s},
        "cluster": {"ps": ps, "workers": workers} if ps or workers > 1 else None,
        "tf1_compat": tf1,
        "model_name": model_name,
        **({"resource_group": resource_group} if resource_group else {}),
    }
    with obj.client() as client:
        uri = script_uri(client, script, project, resource_group)
        submitted = client.submit_job(uri, name=name, project=project, **options)
        if output == "json" and not wait:
            echo_json(submitted)
            return
        click.echo(f"Job {submitted.id} submitted ({submitted.state}).", err=True)
        if not wait:
            return
        final = stream_until_done(client, submitted.id)
    if output == "json":
        echo_json(final)
    if final.state != "SUCCEEDED":
        sys.exit(FAILED_EXIT)


@job.command(name="list")
@click.option("--project", "-p", help="Only this project's jobs.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@output_option
@pass_cli
def list_(obj: CliContext, project: str | None, limit: int, output: str) -> None:
    """List recent jobs, newest first."""
    with obj.client() as client:
        found = client.list_jobs(project, limit)
    if output == "json":
        echo_json(found)
        return
    rows = [(j.id, j.name, j.project, j.state, when(j.created_at), j.reason) for j in found]
    table(None, ["JOB", "NAME", "PROJECT", "STATE", "CREATED", "REASON"], rows)


@job.command()
@click.argument("job_id")
@output_option
@pass_cli
def status(obj: CliContext, job_id: str, output: str) -> None:
    """Show a job's state, exit code, reason, times and peak memory."""
    with obj.client() as client:
        found = client.get_job(job_id)
    if output == "json":
        echo_json(found)
        return
    fields([("job", found.id), ("name", found.name), ("project", found.project),
            ("state", found.state), ("reason", found.reason or None),
            ("resource group", found.resource_group or None),
            ("exit code", found.exit_code), ("script", found.script),
            ("created", when(found.created_at)), ("started", when(found.started_at)),
            ("ended", when(found.ended_at)),
            ("peak memory", f"{found.peak_rss_mb} MB" if found.peak_rss_mb is not None else None),
            ("submitted by", found.submitted_by)])  # fmt: skip


@job.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the job ends.")
@click.option("--task", default="chief", show_default=True, help="chief, worker:N or ps:N.")
@pass_cli
def logs(obj: CliContext, job_id: str, follow: bool, task: str) -> None:
    """Print a job's output (kept after it ends)."""
    with obj.client() as client:
        for text in client.follow_logs(job_id, task=task, follow=follow):
            sys.stdout.write(text)
            sys.stdout.flush()


@job.command()
@click.argument("job_id")
@click.option("--timeout-s", type=float, help="Give up after this many seconds.")
@output_option
@pass_cli
def wait(obj: CliContext, job_id: str, timeout_s: float | None, output: str) -> None:
    """Wait for a job to end; exit 8 when it did not succeed."""
    with obj.client() as client:
        final = client.wait_job(job_id, timeout_s=timeout_s)
    if output == "json":
        echo_json(final)
    else:
        click.echo(f"Job {final.id} {final.state}" + (f": {final.reason}" if final.reason else ""))
    if final.state != "SUCCEEDED":
        sys.exit(FAILED_EXIT)


@job.command()
@click.argument("job_id")
@pass_cli
def kill(obj: CliContext, job_id: str) -> None:
    """Stop a job: SIGTERM to its processes, SIGKILL after a grace period."""
    with obj.client() as client:
        found = client.kill_job(job_id)
    if found.is_final:
        click.echo(f"Job {found.id} is {found.state}.")
    else:
        click.echo(f"Job {found.id} is being stopped.")
