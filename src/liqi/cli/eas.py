"""`liqi eas` (alias `liqi service`): deploy and manage model services the way eascmd does,
from the same files (`eascmd -c eas_config.ini create eas_mnist.json`)."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import click

from liqi.cli.context import CliContext
from liqi.cli.eas_output import (
    RUNNING_OR_FAILED,
    STOPPED,
    ProgressPrinter,
    describe,
    endpoint_rows,
    events_table,
    finish,
    key_table,
    service_list,
    settle,
    versions_table,
    warnings,
)
from liqi.cli.output import echo_json, output_option
from liqi.client import Client
from liqi.client.services import SETTLED_STATES, ServiceInfo, load_service_file
from liqi.core.pai_config import SeedConfig, SeedFileKind, parse_seed_config
from liqi.errors import ConfigError, InvalidRequestError

F = TypeVar("F", bound=Callable[..., Any])

GROUP_EPILOG = """\b
Examples:
  liqi eas create eas_mnist.json          deploy, then wait until it runs
  liqi eas -c ~/tools/eas_config.ini create eas_mnist.json
                                          the same, signed with the key in eas_config.ini
  liqi eas desc mnist                     state, endpoints, instances, last events
  liqi eas modify mnist -s patch.json     merge a partial JSON in: a new version
  liqi eas scale mnist 3
  liqi eas rollback mnist --version 1
  liqi eas logs mnist --follow
  liqi eas delete mnist --yes

\b
eascmd -> liqi:
  eascmd -c eas_config.ini create x.json   liqi eas -c eas_config.ini create x.json
  eascmd modify NAME -s x.json             liqi eas modify NAME -s x.json
  eascmd desc|stop|start|delete NAME       liqi eas desc|stop|start|delete NAME
  eascmd list                              liqi eas list
"""

CREATE_EPILOG = """\b
Examples:
  liqi eas create eas_mnist.json
  liqi eas create eas_mnist.json --project algo_platform --no-wait
  liqi eas create eas_mnist.json -o json > created.json   (progress on stderr)

\b
eas_mnist.json, as the seed writes it:
  {"name": "mnist", "generate_token": "false",
   "model_path": "oss://mybucket/models/", "processor": "tensorflow_cpu",
   "metadata": {"region": "shanghai", "instance": 1, "cpu": 1, "memory": 2000}}
"""


@dataclass(frozen=True)
class EasContext:
    """The CLI context, plus the key from ``-c eas_config.ini`` when one was given."""

    cli: CliContext
    keys: SeedConfig | None = None

    def client(self) -> Client:
        if self.keys is None:
            return self.cli.client()
        return Client(
            access_id=self.keys.access_id,
            access_key=self.keys.access_key,
            profile=self.cli.profile,
            environ=self.cli.environ,
        )


pass_eas = click.make_pass_decorator(EasContext)


def read_key_file(given: str) -> SeedConfig:
    """The access key in an eas_config.ini (odps_config.ini works too)."""
    path = Path(given).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"-c {given}: no such file. It takes an eas_config.ini with access_id= and "
            "access_key= lines."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"-c {given}: cannot read it ({exc}).") from None
    return parse_seed_config(text, given)


def check_osscredentials(document: dict[str, Any], source: str) -> None:
    """An ``osscredentials`` path must be a readable .osscredentials file. Only checked: the
    server reads models with its own bucket grants, never with these keys."""
    value = document.get("osscredentials")
    if not isinstance(value, str) or not value:
        return  # absent, or of the wrong type: the server names the field
    path = Path(value).expanduser()
    where = f"'osscredentials' in {source}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{where}: {value!r} does not exist. Point it at your .osscredentials file, or "
            "remove the field (liqi reads models with the server's own bucket grants)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {value!r} ({exc}).") from None
    parsed = parse_seed_config(text, value)
    if parsed.kind is not SeedFileKind.OSS:
        raise ConfigError(
            f"{where}: {value!r} is a {parsed.kind.value}, not a .osscredentials file "
            "([OSSCredentials] with host=, accessid= and accesskey= lines)."
        )


SETTLE_HELP = "Wait until the service has settled; exit 6 when it FAILED."


def waiting(wait_help: str = SETTLE_HELP) -> Callable[[F], F]:
    """--wait/--no-wait and --timeout-s for commands that change a service."""

    def decorate(f: F) -> F:
        f = click.option(
            "--timeout-s",
            type=click.FloatRange(min=0, min_open=True),
            default=300.0,
            show_default=True,
            help="Stop waiting after this many seconds (exit 6); the change goes on.",
        )(f)
        return click.option("--wait/--no-wait", default=True, show_default=True, help=wait_help)(f)

    return decorate


# -- the group and its alias ------------------------------------------------------------------


class AliasGroup(click.Group):
    """A group that runs another group's commands (`liqi service` = `liqi eas`). Its own
    command table stays empty, so the generated docs list the commands once."""

    def __init__(self, *args: Any, target: click.Group, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target = target

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self.target.list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.target.get_command(ctx, cmd_name)


config_option = click.option(
    "-c",
    "--config",
    "config",
    metavar="FILE",
    help="An eas_config.ini (access_id=, access_key=) whose key signs the requests instead "
    "of the profile's; the endpoint still comes from the profile or LIQI_ENDPOINT.",
)


def _enter(ctx: click.Context, config: str | None) -> None:
    cli = ctx.find_object(CliContext)
    assert cli is not None
    ctx.obj = EasContext(cli, read_key_file(config) if config else None)


@click.group(epilog=GROUP_EPILOG)
@config_option
@click.pass_context
def eas(ctx: click.Context, config: str | None) -> None:
    """Model services (EAS): deploy an EAS service JSON, watch it, change, scale, stop, delete.

    Each change makes the server start or stop model-server instances; the commands that
    change a service wait until it has settled (--no-wait returns at once).
    """
    _enter(ctx, config)


@click.group(cls=AliasGroup, target=eas, epilog=GROUP_EPILOG)
@config_option
@click.pass_context
def service(ctx: click.Context, config: str | None) -> None:
    """Model services: another name for `liqi eas`, with the same commands and options.

    See `liqi eas --help` (and `liqi eas COMMAND --help`) for the commands.
    """
    _enter(ctx, config)


# -- commands ---------------------------------------------------------------------------------


@eas.command(epilog=CREATE_EPILOG)
@click.argument("spec", metavar="SPEC.json")
@click.option("--project", "-p", help="Project of the service [default: the profile's].")
@waiting()
@output_option
@pass_eas
def create(obj: EasContext, spec: str, project: str | None, wait: bool, timeout_s: float,
           output: str) -> None:  # fmt: skip
    """Deploy the service described by SPEC.json (EAS's service JSON, e.g. eas_mnist.json).

    Prints the endpoint and the token, then the progress until the service runs. Fields liqi
    does not use are named in warnings on stderr. An "osscredentials" path must exist and be a
    .osscredentials file, but liqi does not use its keys: the server reads the model with its
    own bucket grants (see `liqi oss grant`).
    """
    document = load_service_file(spec)
    check_osscredentials(document, spec)
    stderr = output == "json"
    with obj.client() as client:
        created = client.create_service(document, project)
        click.echo(f"[RequestId]: {uuid.uuid4().hex.upper()}", err=stderr)
        warnings(created)
        key_table(endpoint_rows(created), stderr=stderr)
        if not wait:
            if output == "json":
                echo_json(created)
            return
        final = settle(
            client,
            created,
            "[OK] Creating service",
            timeout_s=timeout_s,
            stderr=stderr,
            until=SETTLED_STATES,
        )
    finish(replace(final, token=created.token, warnings=created.warnings), output)


@eas.command()
@click.argument("name")
@click.option("-s", "--spec", required=True, metavar="SPEC.json", help="The JSON to apply.")
@click.option(
    "--replace", "replace_all", is_flag=True,
    help="Replace the whole JSON instead of merging into it (EAS's UpdateType=replace).",
)  # fmt: skip
@waiting()
@output_option
@pass_eas
def modify(obj: EasContext, name: str, spec: str, replace_all: bool, wait: bool,
           timeout_s: float, output: str) -> None:  # fmt: skip
    """Change service NAME: a new version from SPEC.json, rolled out instance by instance.

    By default the JSON is merged into the current one key by key, so a partial JSON such as
    {"metadata": {"instance": 2}} is enough.
    """
    document = load_service_file(spec)
    check_osscredentials(document, spec)
    stderr = output == "json"
    with obj.client() as client:
        changed = client.modify_service(name, document, replace=replace_all)
        warnings(changed)
        line = f"[OK] Updating service to version {changed.current_version}"
        if not wait:
            click.echo(line, err=stderr)
            if output == "json":
                echo_json(changed)
            return
        final = settle(client, changed, line, timeout_s=timeout_s, stderr=stderr)
    finish(replace(final, warnings=changed.warnings), output)


@eas.command()
@click.argument("name")
@output_option
@pass_eas
def desc(obj: EasContext, name: str, output: str) -> None:
    """Describe service NAME: state, endpoints, versions, resources, instances, events."""
    with obj.client() as client:
        found = client.get_service(name)
    if output == "json":
        echo_json(found)
    else:
        describe(found)


@eas.command(name="list")
@click.option("--project", "-p", help="Only this project's services.")
@output_option
@pass_eas
def list_(obj: EasContext, project: str | None, output: str) -> None:
    """List the services you can see."""
    with obj.client() as client:
        found = client.list_services(project)
    if output == "json":
        echo_json(found)
    elif not found:
        click.echo("No services. Deploy one with `liqi eas create SPEC.json`.", err=True)
    else:
        service_list(found)


def _change(
    obj: EasContext,
    request: Callable[[Client], ServiceInfo],
    first_line: str,
    *,
    wait: bool,
    timeout_s: float,
    output: str,
    until: Collection[str] | None = None,
) -> None:
    stderr = output == "json"
    with obj.client() as client:
        info = request(client)
        if not wait:
            click.echo(first_line, err=stderr)
            if output == "json":
                echo_json(info)
            return
        final = settle(client, info, first_line, timeout_s=timeout_s, stderr=stderr, until=until)
    finish(final, output)


@eas.command()
@click.argument("name")
@waiting()
@output_option
@pass_eas
def stop(obj: EasContext, name: str, wait: bool, timeout_s: float, output: str) -> None:
    """Stop service NAME's instances; it keeps its versions and token (see `start`)."""
    _change(obj, lambda c: c.stop_service(name), "[OK] Stopping service", wait=wait,
            timeout_s=timeout_s, output=output, until=STOPPED)  # fmt: skip


@eas.command()
@click.argument("name")
@waiting()
@output_option
@pass_eas
def start(obj: EasContext, name: str, wait: bool, timeout_s: float, output: str) -> None:
    """Start a stopped (or failed) service NAME again."""
    _change(obj, lambda c: c.start_service(name), "[OK] Starting service", wait=wait,
            timeout_s=timeout_s, output=output, until=RUNNING_OR_FAILED)  # fmt: skip


@eas.command()
@click.argument("name")
@click.argument("count", metavar="[N]", required=False, type=click.IntRange(0))
@click.option("--instances", type=click.IntRange(0), help="The number of instances (or N).")
@waiting()
@output_option
@pass_eas
def scale(obj: EasContext, name: str, count: int | None, instances: int | None, wait: bool,
          timeout_s: float, output: str) -> None:  # fmt: skip
    """Run N instances of service NAME (0 keeps the service but no instance)."""
    if count is None and instances is None:
        raise click.UsageError("Give the number of instances: `liqi eas scale NAME N`.")
    if count is not None and instances is not None and count != instances:
        raise click.UsageError(f"N={count} and --instances={instances} disagree: give one.")
    wanted = count if count is not None else instances
    assert wanted is not None
    _change(obj, lambda c: c.scale_service(name, wanted),
            f"[OK] Scaling service to {wanted} instance(s)", wait=wait, timeout_s=timeout_s,
            output=output)  # fmt: skip


@eas.command()
@click.argument("name")
@click.option("--version", "version", required=True, type=click.IntRange(1),
              help="The version to run (see `liqi eas versions NAME`).")  # fmt: skip
@waiting()
@output_option
@pass_eas
def rollback(obj: EasContext, name: str, version: int, wait: bool, timeout_s: float,
             output: str) -> None:  # fmt: skip
    """Switch service NAME to an earlier (or later) version: EAS's UpdateServiceVersion."""
    _change(obj, lambda c: c.switch_service_version(name, version),
            f"[OK] Switching service to version {version}", wait=wait, timeout_s=timeout_s,
            output=output)  # fmt: skip


@eas.command()
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@waiting("Wait until the service is gone.")
@pass_eas
def delete(obj: EasContext, name: str, yes: bool, wait: bool, timeout_s: float) -> None:
    """Delete service NAME: stop its instances and forget its versions and token."""
    with obj.client() as client:
        found = client.get_service(name)
        if not yes:
            question = (
                f"Delete service {name} ({found.state}, {found.instances_ready} ready "
                f"instance(s), {found.latest_version} version(s))?"
            )
            try:
                confirmed = click.confirm(question)
            except click.Abort:
                raise InvalidRequestError(
                    f"Service {name!r} was not deleted: no answer to the confirmation (stdin "
                    "is closed or not a terminal). Pass --yes to delete without asking."
                ) from None
            if not confirmed:
                click.echo(f"Service {name} was not deleted.")
                sys.exit(1)
        client.delete_service(name)
        printer = ProgressPrinter()
        printer.line("[OK] Deleting service")
        if not wait:
            return
        client.wait_service_deleted(name, timeout_s=timeout_s, on_change=printer)
        printer.line("[OK] Service is deleted")


@eas.command()
@click.argument("name")
@output_option
@pass_eas
def token(obj: EasContext, name: str, output: str) -> None:
    """Print the token requests to service NAME need (needs the member role)."""
    with obj.client() as client:
        found = client.service_token(name)
    if output == "json":
        echo_json(found)
    elif found.token:
        click.echo(found.token)
    else:
        click.echo(f"Service {name} takes requests without a token (generate_token is false).")


@eas.command()
@click.argument("name")
@output_option
@pass_eas
def versions(obj: EasContext, name: str, output: str) -> None:
    """List service NAME's versions (each create, modify makes one); * marks the current."""
    with obj.client() as client:
        found = client.list_service_versions(name)
    if output == "json":
        echo_json(found)
    else:
        versions_table(found)


@eas.command()
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="The newest this many events.")  # fmt: skip
@output_option
@pass_eas
def events(obj: EasContext, name: str, limit: int, output: str) -> None:
    """List service NAME's events, oldest first: changes, state changes, crashes."""
    with obj.client() as client:
        found = client.service_events(name, limit)
    if output == "json":
        echo_json(found)
    else:
        events_table(found)


@eas.command()
@click.argument("name")
@click.option("--instance", help="Instance id (`liqi eas desc NAME`) [default: the newest].")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing until the instance has ended (Ctrl-C stops).")  # fmt: skip
@pass_eas
def logs(obj: EasContext, name: str, instance: str | None, follow: bool) -> None:
    """Print the log of one of service NAME's instances (the model server's output)."""
    printed = False
    with obj.client() as client:
        try:
            for chunk in client.follow_service_logs(name, instance, follow=follow):
                printed = True
                sys.stdout.write(chunk.data)
                sys.stdout.flush()
        except KeyboardInterrupt:
            return
    if not printed:
        click.echo(f"Service {name} has no instance log yet.", err=True)
