"""SDK methods for resources (``odps://<project>/resources/<name>``) and datasets
(``odps://<project>/volumes/<volume>/<partition>``): mixed into :class:`liqi.Client`."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from liqi.client.storage import file_sha256
from liqi.client.streams import Progress, answer_error
from liqi.core import odps, signing
from liqi.core.odps import VolumeUri, parse_volume_uri
from liqi.core.refs import check_key
from liqi.errors import (
    AlreadyExistsError,
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServerUnavailableError,
)
from liqi.stores.base import CHUNK_BYTES, file_chunks


@dataclass(frozen=True)
class ResourceInfo:
    uri: str
    project: str
    name: str
    kind: str
    comment: str
    size: int
    sha256: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DatasetInfo:
    uri: str
    project: str
    volume: str
    partition: str
    version: int
    source: str
    comment: str
    file_count: int
    size: int
    builtin: bool
    created_at: datetime


@dataclass(frozen=True)
class DatasetFile:
    path: str
    size: int


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _resource(data: dict[str, Any]) -> ResourceInfo:
    fields = {k: data[k] for k in ResourceInfo.__dataclass_fields__}
    fields["created_at"] = _when(data["created_at"])
    fields["updated_at"] = _when(data["updated_at"])
    return ResourceInfo(**fields)


def _dataset(data: dict[str, Any]) -> DatasetInfo:
    fields = {k: data[k] for k in DatasetInfo.__dataclass_fields__}
    fields["created_at"] = _when(data["created_at"])
    return DatasetInfo(**fields)


def _partition_path(uri: VolumeUri) -> str:
    parts = (uri.project, uri.volume, uri.partition)
    project, volume, partition = (quote(p, safe="") for p in parts)
    return f"/api/v1/projects/{project}/volumes/{volume}/{partition}"


def local_files(root: Path) -> list[tuple[str, Path]]:
    """(path in the dataset, file) for every file under ``root``, sorted.

    Raises:
        NotFoundError: ``root`` is not a directory.
        InvalidRequestError: it holds no file, or a name no dataset path can hold.
    """
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise NotFoundError(
            f"Dataset source {str(root)!r} {what}. Pass a local directory or an oss:// prefix."
        )
    found = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            check_key(rel, allow_folder=False)
            found.append((rel, path))
    if not found:
        raise InvalidRequestError(
            f"Dataset source {str(root)!r} is empty: a dataset needs at least one file."
        )
    return found


class CatalogMethods:
    """Resources and datasets. Needs ``_request`` and ``_http`` from BaseClient."""

    _http: httpx.Client
    endpoint: str
    project: str | None

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    # -- resources ------------------------------------------------------------------------

    def _resources_path(self, project: str | None, name: str = "") -> str:
        chosen = project or self.project
        if not chosen:
            raise ConfigError(
                "Say which project: pass project=... or set a project in the profile "
                "(`liqi config set project NAME`)."
            )
        base = f"/api/v1/projects/{quote(chosen, safe='')}/resources"
        return f"{base}/{quote(name, safe='')}" if name else base

    def add_resource(
        self,
        path: Path | str,
        name: str | None = None,
        kind: str | None = None,
        comment: str = "",
        force: bool = False,
        progress: Progress | None = None,
        *,
        project: str | None = None,
    ) -> ResourceInfo:
        """Add file ``path`` as resource ``name`` (default: the file's name) of ``project``
        (default: the profile's), like ODPS's ``add file``. ``kind`` (file, py, archive, jar)
        is inferred from the name when None; ``force`` replaces an existing resource.

        Raises:
            AlreadyExistsError: the resource exists and ``force`` is false.
            PayloadTooLargeError: the file is over 2 GiB.
        """
        source = Path(path)
        if not source.is_file():
            raise NotFoundError(f"No such file: {str(source)!r}.")
        chosen = odps.check_resource_name(name or source.name)
        odps.resource_kind(chosen, kind)
        size = source.stat().st_size
        if size > odps.MAX_RESOURCE_BYTES:
            raise PayloadTooLargeError(
                f"{source} is {size} bytes, over the limit of {odps.MAX_RESOURCE_BYTES} bytes "
                "(2 GiB) per resource. Put large data in a bucket or a dataset."
            )
        params: dict[str, str] = {"comment": comment}
        if kind:
            params["kind"] = kind
        if force:
            params["force"] = "true"
        headers = {
            "content-type": "application/octet-stream",
            "content-length": str(size),
            signing.CONTENT_HASH_HEADER: file_sha256(source),
        }
        data = self._request(
            "PUT",
            self._resources_path(project, chosen),
            params=params,
            headers=headers,
            content=file_chunks(source, progress),
        )
        return _resource(data)

    def list_resources(self, project: str | None = None) -> list[ResourceInfo]:
        return [_resource(r) for r in self._request("GET", self._resources_path(project))]

    def describe_resource(self, name: str, *, project: str | None = None) -> ResourceInfo:
        return _resource(self._request("GET", self._resources_path(project, name)))

    def get_resource(
        self,
        name: str,
        dest: Path | str,
        *,
        project: str | None = None,
        progress: Progress | None = None,
    ) -> Path:
        """Download resource ``name`` to ``dest`` (a file, or a directory to put it in)."""
        target = Path(dest)
        if target.is_dir():
            target = target / name
        self._download(self._resources_path(project, name) + "/content", target, progress)
        return target

    def drop_resource(self, name: str, *, project: str | None = None) -> None:
        self._request("DELETE", self._resources_path(project, name))

    # -- datasets -------------------------------------------------------------------------

    def list_datasets(self, project: str | None = None) -> list[DatasetInfo]:
        """Every dataset partition this key may read (built-ins included), or ``project``'s."""
        params = {"project": project} if project else None
        return [_dataset(d) for d in self._request("GET", "/api/v1/datasets", params=params)]

    def describe_dataset(self, uri: str) -> DatasetInfo:
        return _dataset(self._request("GET", _partition_path(parse_volume_uri(uri))))

    def list_dataset_files(self, uri: str) -> list[DatasetFile]:
        path = _partition_path(parse_volume_uri(uri)) + "/files"
        return [DatasetFile(path=f["path"], size=f["size"]) for f in self._request("GET", path)]

    def download_dataset(
        self, uri: str, dest_dir: Path | str, *, progress: Progress | None = None
    ) -> list[Path]:
        """Download every file of the partition into ``dest_dir`` (kept relative paths)."""
        base = _partition_path(parse_volume_uri(uri)) + "/files/"
        root = Path(dest_dir)
        written = []
        for item in self.list_dataset_files(uri):
            check_key(item.path, allow_folder=False)  # never write outside dest_dir
            target = root.joinpath(*item.path.split("/"))
            self._download(base + quote(item.path, safe="/"), target, progress)
            written.append(target)
        return written

    def create_dataset(
        self,
        uri: str,
        source: Path | str,
        force: bool = False,
        comment: str = "",
        progress: Progress | None = None,
    ) -> DatasetInfo:
        """Create partition ``uri`` from a local directory or an ``oss://`` prefix.

        A partition is read-only: creating it again needs ``force`` and makes the next
        version. Local files are uploaded one by one and become visible together, only once
        all of them arrived.

        Raises:
            AlreadyExistsError: it exists and ``force`` is false.
            NotFoundError: the directory or the prefix does not exist.
            InvalidRequestError: the directory is empty.
        """
        target = parse_volume_uri(uri)
        if isinstance(source, str) and source.startswith("oss://"):
            body = {"source": source, "comment": comment, "force": force}
            return _dataset(self._request("POST", _partition_path(target), json=body))
        files = local_files(Path(source))
        if not force:
            self._refuse_existing(uri)
        upload = uuid.uuid4().hex
        total = 0
        for rel, path in files:
            total += self.upload_dataset_file(uri, upload, rel, path, progress=progress)
        return self.commit_dataset_upload(
            uri,
            upload,
            file_count=len(files),
            size=total,
            source=str(Path(source).absolute()),
            comment=comment,
            force=force,
        )

    def _refuse_existing(self, uri: str) -> None:
        """Refuse before uploading anything when ``uri`` exists (the server checks again at
        commit). A built-in one is left to the server, which says it is read-only."""
        try:
            found = self.describe_dataset(uri)
        except NotFoundError:
            return
        if not found.builtin:
            raise AlreadyExistsError(
                f"Dataset {uri} already exists (version {found.version}); partitions are "
                f"read-only. Create version {found.version + 1} with "
                f"`liqi dataset create {uri} --from ... -f` (force=True in the SDK)."
            )

    def upload_dataset_file(
        self, uri: str, upload: str, rel: str, path: Path, *, progress: Progress | None = None
    ) -> int:
        """Stage one file of upload ``upload`` (invisible until committed); returns its size."""
        check_key(rel, allow_folder=False)
        url = _partition_path(parse_volume_uri(uri)) + "/files/" + quote(rel, safe="/")
        headers = {
            "content-type": "application/octet-stream",
            "content-length": str(path.stat().st_size),
            signing.CONTENT_HASH_HEADER: file_sha256(path),
        }
        content = file_chunks(path, progress)
        data = self._request(
            "PUT", url, params={"upload": upload}, headers=headers, content=content
        )
        return int(data["size"])

    def commit_dataset_upload(
        self,
        uri: str,
        upload: str,
        *,
        file_count: int,
        size: int,
        source: str = "",
        comment: str = "",
        force: bool = False,
    ) -> DatasetInfo:
        """Publish upload ``upload`` if the server holds ``file_count`` files of ``size``
        bytes; otherwise the upload is dropped and nothing becomes visible."""
        body = {
            "file_count": file_count,
            "size": size,
            "source": source,
            "comment": comment,
            "force": force,
        }
        path = _partition_path(parse_volume_uri(uri)) + "/commit"
        return _dataset(self._request("POST", path, params={"upload": upload}, json=body))

    def drop_dataset(self, uri: str) -> None:
        self._request("DELETE", _partition_path(parse_volume_uri(uri)))

    # -- downloads ------------------------------------------------------------------------

    @contextmanager
    def _stream(self, path: str) -> Iterator[Iterator[bytes]]:
        try:
            with self._http.stream("GET", path) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    raise answer_error(answer)
                yield answer.iter_bytes(CHUNK_BYTES)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(
                f"Lost the connection to {self.endpoint} while reading {path}: {exc}"
            ) from None

    def _download(self, path: str, dest: Path, progress: Progress | None) -> None:
        """Stream ``path`` to ``dest`` atomically (a temp file beside it, renamed at the end)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh, self._stream(path) as chunks:
                for chunk in chunks:
                    fh.write(chunk)
                    if progress:
                        progress(len(chunk))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
