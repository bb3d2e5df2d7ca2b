"""The `liqi` root command, global options and error rendering."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from liqi._version import __version__
from liqi.cli import (
    config_cmd,
    console,
    dataset,
    eas,
    job,
    key,
    model,
    oss,
    pai,
    predict,
    project,
    quickstart,
    resource,
    serve,
    server,
)
from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, output_option
from liqi.config import resolve_client_config
from liqi.control.server.daemon import health
from liqi.errors import LiqiError

logger = logging.getLogger(__name__)


class LiqiCliError(click.ClickException):
    """A LiqiError on its way out: ``Error: <message>`` on stderr, the error's exit code."""

    def __init__(self, error: LiqiError) -> None:
        super().__init__(error.message)
        self.exit_code = error.exit_code  # type: ignore[misc]


class LiqiGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LiqiError as exc:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise LiqiCliError(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(
                f"internal error ({type(exc).__name__}: {exc}). Run again with `liqi --debug ...` "
                "for the traceback, and report it if it persists."
            ) from None


@click.group(cls=LiqiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="LIQI_HOME",
    help="State folder of the server and default profile file [env LIQI_HOME; default ~/.liqi].",
)
@click.option("--profile", envvar="LIQI_PROFILE", help="Profile to use [env LIQI_PROFILE].")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, "--version", prog_name="liqi")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, profile: str | None, debug: bool) -> None:
    """liqi: train, store, deploy and call machine-learning models on your own machine.

    \b
    Start here:
      liqi quickstart            the whole workflow: train MNIST, deploy it, predict
      liqi server start|status   the control plane in the background
      liqi config import FILE    use your odps_config.ini / eas_config.ini / .osscredentials
      liqi eas create SPEC.json  deploy a model as a service (the EAS service JSON)
    """
    ctx.obj = CliContext(
        home=home.expanduser().absolute() if home else None, profile=profile, debug=debug
    )
    if debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


@cli.command()
@output_option
@pass_cli
def version(obj: CliContext, output: str) -> None:
    """Print liqi's version (and the server's, when one is reachable)."""
    endpoint = resolve_client_config(obj.environ, profile=obj.profile).endpoint
    answer = health(endpoint, timeout_s=1.0)
    server_version = answer.get("version") if answer else None
    info: dict[str, Any] = {
        "client": __version__,
        "python": sys.version.split()[0],
        "server": server_version,
        "endpoint": endpoint,
    }
    if output == "json":
        echo_json(info)
        return
    click.echo(f"liqi {__version__} (Python {info['python']})")
    if server_version:
        click.echo(f"server {server_version} at {endpoint}")
    else:
        click.echo(f"no server answering at {endpoint}")


cli.add_command(server.server)
cli.add_command(project.project)
cli.add_command(key.key)
cli.add_command(config_cmd.config)
cli.add_command(quickstart.quickstart)
cli.add_command(oss.oss)
cli.add_command(job.job)
cli.add_command(pai.pai)
cli.add_command(console.console)
cli.add_command(model.model)
cli.add_command(resource.resource)
cli.add_command(dataset.dataset)
cli.add_command(serve.serve)
cli.add_command(predict.predict)
cli.add_command(eas.eas)
cli.add_command(eas.service)


def main() -> None:
    cli(prog_name="liqi")
