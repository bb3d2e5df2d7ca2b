"""`liqi oss mb|rb|ls|cp|mv|rm|mkdir|cat|stat|sign|grant|revoke`: buckets and objects."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from liqi.cli.context import CliContext, pass_cli
from liqi.cli.output import echo_json, fields, output_option, table, when
from liqi.cli.transfer import human_size, progress_bar
from liqi.client import Client
from liqi.config import ProfileFile
from liqi.core.pai_config import parse_seed_config
from liqi.core.refs import OssUri, parse_oss_uri
from liqi.errors import ConfigError, InvalidRequestError
from liqi.stores.base import ObjectInfo


def remote(text: str) -> OssUri | None:
    return parse_oss_uri(text) if text.startswith("oss://") else None


def need_remote(text: str) -> OssUri:
    uri = remote(text)
    if uri is None:
        raise InvalidRequestError(f"{text!r} is not an oss:// URI: write oss://<bucket>/<key>.")
    return uri


@click.group()
def oss() -> None:
    """Buckets and objects, addressed oss://<bucket>/<key>."""


def _credentials(obj: CliContext, path: Path | None) -> tuple[str, str] | None:
    if path is not None:
        seed = parse_seed_config(path.read_text(encoding="utf-8-sig"), path.name)
        return seed.access_id, seed.access_key
    profiles = ProfileFile.load(obj.profile_path)
    name = obj.profile or profiles.current
    profile = profiles.profiles.get(name) if name else None
    if profile and profile.oss_access_id and profile.oss_access_key:
        return profile.oss_access_id, profile.oss_access_key
    return None


@oss.command()
@click.argument("uri")
@click.option("--project", "-p", help="Project that owns the bucket [default: the profile's].")
@click.option(
    "--backend",
    type=click.Choice(["local", "s3", "oss"]),
    default="local",
    show_default=True,
    help="Where the objects live.",
)
@click.option("--s3-endpoint", help="S3-compatible endpoint URL (MinIO, OSS's S3 API, AWS).")
@click.option("--s3-bucket", help="The S3 bucket that holds this bucket's objects.")
@click.option("--s3-region", help="S3 region.")
@click.option("--oss-endpoint", help="Alibaba OSS endpoint, e.g. oss-cn-hangzhou.aliyuncs.com.")
@click.option("--oss-bucket", help="The OSS bucket that holds this bucket's objects.")
@click.option("--prefix", default="", help="Key prefix inside the external bucket.")
@click.option(
    "--credentials-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .osscredentials (or eas_config.ini) file with the external store's keys "
    "[default: oss_access_id/oss_access_key of the profile].",
)
@click.option("--comment", default="", help="What the bucket holds.")
@output_option
@pass_cli
def mb(obj: CliContext, uri: str, project: str | None, backend: str, s3_endpoint: str | None,
       s3_bucket: str | None, s3_region: str | None, oss_endpoint: str | None,
       oss_bucket: str | None, prefix: str, credentials_file: Path | None, comment: str,
       output: str) -> None:  # fmt: skip
    """Make bucket URI (oss://name)."""
    target = need_remote(uri)
    if target.key:
        raise InvalidRequestError(f"mb takes a bucket, not a key: oss://{target.bucket}")
    creds = _credentials(obj, credentials_file) if backend != "local" else None
    if backend != "local" and creds is None:
        raise ConfigError(
            f"A {backend} bucket needs the store's access keys: pass --credentials-file "
            "(a .osscredentials file) or set oss_access_id and oss_access_key in the profile."
        )
    with obj.client() as client:
        made = client.create_bucket(
            target.bucket,
            project=project,
            backend=backend,
            endpoint=s3_endpoint if backend == "s3" else oss_endpoint,
            external_bucket=s3_bucket if backend == "s3" else oss_bucket,
            prefix=prefix,
            region=s3_region,
            credentials=creds,
            comment=comment,
        )
    if output == "json":
        echo_json(made)
    else:
        click.echo(f"Bucket oss://{made.name} created in project {made.project} ({made.backend}).")


@oss.command()
@click.argument("uri")
@click.option("--force", is_flag=True, help="Delete the objects in it too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def rb(obj: CliContext, uri: str, force: bool, yes: bool) -> None:
    """Remove bucket URI (it must be empty unless --force)."""
    target = need_remote(uri)
    if force and not yes:
        click.confirm(f"Delete bucket oss://{target.bucket} and every object in it?", abort=True)
    with obj.client() as client:
        client.delete_bucket(target.bucket, force=force)
    click.echo(f"Bucket oss://{target.bucket} removed.")


@oss.command(name="ls")
@click.argument("uri", required=False)
@click.option("--recursive", "-r", is_flag=True, help="Every object under the prefix, no folders.")
@output_option
@pass_cli
def ls(obj: CliContext, uri: str | None, recursive: bool, output: str) -> None:
    """List buckets, or the folders and objects under URI."""
    with obj.client() as client:
        if uri is None:
            found = client.list_buckets()
            if output == "json":
                echo_json(found)
                return
            table(None, ["BUCKET", "PROJECT", "BACKEND", "ACCESS", "CREATED"],
                  [(f"oss://{b.name}", b.project, b.backend, b.access, when(b.created_at))
                   for b in found])  # fmt: skip
            return
        target = need_remote(uri)
        prefixes: list[str] = []
        objects: list[ObjectInfo] = []
        marker: str | None = None
        while True:
            delimiter = None if recursive else "/"
            page = client.list_objects(
                target.bucket, target.key, delimiter=delimiter, marker=marker
            )
            prefixes.extend(page.prefixes)
            objects.extend(page.objects)
            if page.next_marker is None:
                break
            marker = page.next_marker
    if output == "json":
        echo_json({"prefixes": prefixes, "objects": objects})
        return
    rows = [("DIR", "", "", f"oss://{target.bucket}/{p}") for p in prefixes]
    rows += [(human_size(o.size), when(o.modified_at), o.etag[:12], f"oss://{target.bucket}/{o.key}")
             for o in objects]  # fmt: skip
    table(None, ["SIZE", "MODIFIED", "ETAG", "OBJECT"], rows)
    total = sum(o.size for o in objects)
    click.echo(f"{len(objects)} object(s), {human_size(total)}; {len(prefixes)} folder(s).")


def _upload_file(client: Client, path: Path, dest: OssUri) -> None:
    size = path.stat().st_size
    with progress_bar(f"{path.name} -> {dest}", size) as progress:
        client.put_object(dest.bucket, dest.key, path, progress=progress)
    click.echo(f"{path} -> {dest} ({human_size(size)})")


def _download(client: Client, src: OssUri, dest: Path) -> None:
    size = client.stat_object(src.bucket, src.key).size
    with progress_bar(f"{src} -> {dest.name}", size) as progress:
        client.get_object(src.bucket, src.key, dest, progress=progress)
    click.echo(f"{src} -> {dest} ({human_size(size)})")


def _upload_path(client: Client, src: str, target: OssUri, recursive: bool) -> None:
    local = Path(src)
    if local.is_dir():
        if not recursive:
            raise InvalidRequestError(f"{src} is a directory: pass -r to upload it.")
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            _upload_file(client, path, target.child(path.relative_to(local).as_posix()))
        return
    if not local.is_file():
        raise InvalidRequestError(f"No such file: {src}")
    _upload_file(client, local, target.child(local.name) if target.is_folder else target)


def _download_uri(client: Client, source: OssUri, dst: str, recursive: bool) -> None:
    dest = Path(dst)
    if not recursive and not source.is_folder:
        out = dest / Path(source.key).name if dst.endswith("/") or dest.is_dir() else dest
        _download(client, source, out)
        return
    if not recursive:
        raise InvalidRequestError(f"{source} is a folder: pass -r to download it.")
    prefix = source.key if source.is_folder else source.key + "/"
    for info in list(client.iter_objects(source.bucket, prefix)):
        _download(client, OssUri(source.bucket, info.key), dest / info.key[len(prefix) :])


def _copy(client: Client, src: str, dst: str, recursive: bool) -> None:
    source, target = remote(src), remote(dst)
    if source is None:
        if target is None:
            raise InvalidRequestError("cp needs an oss:// side; use your shell's cp locally.")
        _upload_path(client, src, target, recursive)
    elif target is None:
        _download_uri(client, source, dst, recursive)
    else:
        key = target.key
        if not recursive and target.is_folder:
            key = target.key + Path(source.key).name
        for info in client.copy_object(str(source), target.bucket, key, recursive=recursive):
            click.echo(f"-> oss://{target.bucket}/{info.key} ({human_size(info.size)})")


@oss.command()
@click.argument("src")
@click.argument("dst")
@click.option("--recursive", "-r", is_flag=True, help="Copy a directory or folder tree.")
@pass_cli
def cp(obj: CliContext, src: str, dst: str, recursive: bool) -> None:
    """Copy local -> oss://, oss:// -> local, or oss:// -> oss://."""
    with obj.client() as client:
        _copy(client, src, dst, recursive)


@oss.command()
@click.argument("src")
@click.argument("dst")
@click.option("--recursive", "-r", is_flag=True, help="Move a directory or folder tree.")
@pass_cli
def mv(obj: CliContext, src: str, dst: str, recursive: bool) -> None:
    """Move: copy, then delete the source once every copy succeeded."""
    with obj.client() as client:
        _copy(client, src, dst, recursive)
        source = remote(src)
        if source is not None:
            client.delete_object(source.bucket, source.key, recursive=recursive)
        elif Path(src).is_dir():
            shutil.rmtree(src)
        else:
            os.unlink(src)
    click.echo(f"Moved {src} to {dst}.")


@oss.command()
@click.argument("uri")
@click.option("--recursive", "-r", is_flag=True, help="Delete everything under the prefix.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_cli
def rm(obj: CliContext, uri: str, recursive: bool, yes: bool) -> None:
    """Delete an object (or, with -r, a folder and all under it)."""
    target = need_remote(uri)
    if recursive and not yes:
        click.confirm(f"Delete everything under {target}?", abort=True)
    if not target.key and not recursive:
        raise InvalidRequestError("Say which object to delete, or pass -r for all of them.")
    with obj.client() as client:
        keys = [target.key] if target.key else _top_level(client, target.bucket)
        count = sum(client.delete_object(target.bucket, k, recursive=recursive) for k in keys)
    click.echo(f"Deleted {count} object(s).")


def _top_level(client: Client, bucket: str) -> list[str]:
    page = client.list_objects(bucket, "", delimiter="/")
    names = list(page.prefixes) + [o.key for o in page.objects]
    while page.next_marker:
        page = client.list_objects(bucket, "", delimiter="/", marker=page.next_marker)
        names += list(page.prefixes) + [o.key for o in page.objects]
    return names


@oss.command()
@click.argument("uri")
@pass_cli
def mkdir(obj: CliContext, uri: str) -> None:
    """Create folder URI (an empty object whose key ends with '/')."""
    target = need_remote(uri)
    if not target.key:
        raise InvalidRequestError("mkdir needs a folder name: oss://<bucket>/<folder>/")
    with obj.client() as client:
        made = client.mkdir(target.bucket, target.key)
    click.echo(f"Folder oss://{target.bucket}/{made.key} created.")


@oss.command()
@click.argument("uri")
@pass_cli
def cat(obj: CliContext, uri: str) -> None:
    """Write an object's bytes to standard output."""
    target = need_remote(uri)
    with obj.client() as client:
        client.write_to(target.bucket, target.key, sys.stdout.buffer)
    sys.stdout.buffer.flush()


@oss.command()
@click.argument("uri")
@output_option
@pass_cli
def stat(obj: CliContext, uri: str, output: str) -> None:
    """Show an object's size, time, etag and type."""
    target = need_remote(uri)
    with obj.client() as client:
        info = client.stat_object(target.bucket, target.key)
    if output == "json":
        echo_json(info)
        return
    fields([("object", str(target)), ("size", f"{human_size(info.size)} ({info.size} bytes)"),
            ("modified", when(info.modified_at)), ("etag", info.etag),
            ("type", info.content_type)])  # fmt: skip


@oss.command()
@click.argument("uri")
@click.option(
    "--timeout",
    "expires_s",
    type=click.IntRange(1, 7 * 24 * 3600),
    default=60,
    show_default=True,
    help="Seconds the URL stays valid (at most 7 days).",
)
@click.option("--method", type=click.Choice(["GET", "PUT"]), default="GET", show_default=True)
@pass_cli
def sign(obj: CliContext, uri: str, expires_s: int, method: str) -> None:
    """Print a presigned URL that needs no credentials until it expires."""
    target = need_remote(uri)
    with obj.client() as client:
        click.echo(client.sign_url(target.bucket, target.key, method=method, expires_s=expires_s))


@oss.command()
@click.argument("uri")
@click.option("--project", "-p", required=True, help="Project to allow.")
@click.option("--read", "read", is_flag=True, help="Allow reading.")
@click.option("--write", "write", is_flag=True, help="Allow writing (implies reading).")
@pass_cli
def grant(obj: CliContext, uri: str, project: str, read: bool, write: bool) -> None:
    """Let another project's keys, jobs and services use bucket URI."""
    target = need_remote(uri)
    if not read and not write:
        raise InvalidRequestError("Say what to allow: --read, --write or both.")
    with obj.client() as client:
        client.grant_bucket(target.bucket, project, read=read, write=write)
    what = "read and write" if write else "read"
    click.echo(f"Project {project} may now {what} oss://{target.bucket}.")


@oss.command()
@click.argument("uri")
@click.option("--project", "-p", required=True, help="Project to take the grant from.")
@pass_cli
def revoke(obj: CliContext, uri: str, project: str) -> None:
    """Take back a project's grant on bucket URI."""
    target = need_remote(uri)
    with obj.client() as client:
        client.revoke_bucket(target.bucket, project)
    click.echo(f"Project {project} no longer has a grant on oss://{target.bucket}.")
