"""`liqi config show|use|set|import`: client profiles."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table
from liqi.client import Client
from liqi.config import PROFILE_KEYS, Profile, ProfileFile, resolve_client_config
from liqi.core.pai_config import SeedConfig, SeedFileKind, parse_seed_config
from liqi.errors import ConfigError, NotFoundError, PermissionDeniedError


def mask(secret: str | None) -> str | None:
    if not secret:
        return None
    return "*" * 8 + secret[-4:] if len(secret) > 8 else "*" * len(secret)


@click.group()
def config() -> None:
    """Client profiles: which server, which access key, which project."""


@config.command()
@output_option
@click.option("--show-secrets", is_flag=True, help="Print access keys in clear.")
@pass_cli
def show(obj: CliContext, output: str, show_secrets: bool) -> None:
    """Show the profiles and the settings in effect (after LIQI_* overrides)."""
    file = ProfileFile.load(obj.profile_path)
    effective = resolve_client_config(obj.environ, profile=obj.profile)

    def secret(value: str | None) -> str | None:
        return value if show_secrets else mask(value)

    if output == "json":
        echo_json(
            {
                "file": str(file.path),
                "current": file.current,
                "profiles": {
                    n: {**p.as_table(), "access_key": secret(p.access_key)}
                    for n, p in file.profiles.items()
                },
                "effective": {**effective.__dict__, "access_key": secret(effective.access_key)},
            }
        )
        return
    click.echo(f"Profile file: {file.path}")
    rows = [
        (
            "*" if name == file.current else "",
            name,
            p.endpoint,
            p.access_id,
            secret(p.access_key),
            p.project,
        )
        for name, p in sorted(file.profiles.items())
    ]
    table(None, ["", "PROFILE", "ENDPOINT", "ACCESS ID", "ACCESS KEY", "PROJECT"], rows)
    click.echo("In effect (flags > LIQI_* variables > profile):")
    fields(
        [
            ("profile", effective.profile),
            ("endpoint", effective.endpoint),
            ("access_id", effective.access_id),
            ("access_key", secret(effective.access_key)),
            ("project", effective.project),
        ]
    )


@config.command()
@click.argument("name")
@pass_cli
def use(obj: CliContext, name: str) -> None:
    """Make profile NAME the current one."""
    file = ProfileFile.load(obj.profile_path)
    file.get(name)
    file.current = name
    file.save()
    click.echo(f"Now using profile {name}.")


@config.command(name="set")
@click.argument("key", type=click.Choice(PROFILE_KEYS))
@click.argument("value")
@pass_cli
def set_(obj: CliContext, key: str, value: str) -> None:
    """Set KEY of the current profile (or of --profile, which is created if missing)."""
    file = ProfileFile.load(obj.profile_path)
    name = obj.profile or file.current or "default"
    current = file.profiles.get(name, Profile(name=name))
    file.upsert(replace(current, **{key: value}))
    file.save()
    click.echo(f"Profile {name}: {key} set.")


@config.command(name="import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--name", help="Name of the profile to write [default: the project's name].")
@click.option(
    "--project",
    help="Project to register the key in [default: project_name of "
    "odps_config.ini, else the admin profile's project].",
)
@click.option(
    "--admin-profile",
    help="Profile of a superuser key that registers the credentials "
    "[default: the current profile].",
)
@click.option(
    "--use/--no-use",
    "make_current",
    default=True,
    show_default=True,
    help="Make the new profile the current one.",
)
@pass_cli
def import_(
    obj: CliContext,
    files: tuple[Path, ...],
    name: str | None,
    project: str | None,
    admin_profile: str | None,
    make_current: bool,
) -> None:
    """Use your odps_config.ini, eas_config.ini and .osscredentials as they are.

    Creates the project named by project_name if it is missing, registers the access id and
    key on the server (needs a superuser profile, such as the one `liqi server start` writes),
    and writes a profile that uses them.
    """
    seeds = [parse_seed_config(_read(path), path.name) for path in files]
    target = project or next((s.project for s in seeds if s.project), None)
    primary = _primary(seeds)
    with Client(profile=admin_profile or obj.profile, environ=obj.environ) as admin:
        if not admin.whoami().get("is_superuser"):
            raise PermissionDeniedError(
                f"Importing credentials registers them on the server, which needs a superuser "
                f"key; profile {admin.config.profile or '(env)'} does not have one. Pass "
                "--admin-profile with the profile `liqi server start` wrote (usually 'default')."
            )
        target = target or admin.project or "default"
        try:
            admin.get_project(target)
        except NotFoundError:
            admin.create_project(target, "Created by `liqi config import`.")
            click.echo(f"Created project {target}.")
        pairs = {(s.access_id, s.access_key) for s in seeds}
        if len(pairs) > 1:
            click.echo(
                f"Warning: the files hold {len(pairs)} different access ids; registering all, "
                f"the profile uses {primary.access_id} from {primary.source}.",
                err=True,
            )
        for access_id, secret in sorted(pairs):
            admin.register_key(access_id, secret, project=target, role="admin", name="imported")
            click.echo(f"Registered access id {access_id} as admin of {target}.")
        endpoint = admin.endpoint
    ignored = [s for s in seeds if s.end_point]
    for seed in ignored:
        click.echo(
            f"Note: end_point {seed.end_point} in {seed.source} is not used; "
            f"liqi talks to {endpoint}."
        )
    profile_name = name or target
    file = ProfileFile.load(obj.profile_path)
    oss = next((s for s in seeds if s.kind is SeedFileKind.OSS), None)
    file.upsert(
        Profile(
            name=profile_name,
            endpoint=endpoint,
            access_id=primary.access_id,
            access_key=primary.access_key,
            project=target,
            oss_host=oss.oss_host if oss else None,
            oss_access_id=oss.access_id if oss else None,
            oss_access_key=oss.access_key if oss else None,
        ),
        make_current=make_current,
    )
    file.save()
    with Client(profile=profile_name, environ=obj.environ) as check:
        visible = [p.name for p in check.list_projects()]
    click.echo(
        f"Wrote profile {profile_name} to {file.path}"
        + (" (now current)." if make_current else ".")
    )
    click.echo(f"It signs in as {primary.access_id} and sees: {', '.join(visible)}.")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.") from None


def _primary(seeds: list[SeedConfig]) -> SeedConfig:
    order = [SeedFileKind.ODPS, SeedFileKind.EAS, SeedFileKind.OSS]
    return sorted(seeds, key=lambda s: order.index(s.kind))[0]
