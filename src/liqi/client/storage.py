"""SDK methods for buckets and objects (``oss://``): mixed into :class:`liqi.Client`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import httpx

from liqi.client.streams import Progress, answer_error
from liqi.core import signing
from liqi.errors import ServerUnavailableError
from liqi.stores.base import CHUNK_BYTES, Listing, ObjectInfo, file_chunks


@dataclass(frozen=True)
class BucketInfo:
    name: str
    project: str
    backend: str
    location: dict[str, str]
    comment: str
    created_at: datetime
    access: str
    grants: list[dict[str, Any]]


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _bucket(data: dict[str, Any]) -> BucketInfo:
    return BucketInfo(
        name=data["name"],
        project=data["project"],
        backend=data["backend"],
        location=dict(data.get("location", {})),
        comment=data.get("comment", ""),
        created_at=_when(data["created_at"]),
        access=data["access"],
        grants=list(data.get("grants", [])),
    )


def _object(data: dict[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=data["key"],
        size=data["size"],
        modified_at=_when(data["modified_at"]),
        etag=data["etag"],
        content_type=data.get("content_type"),
    )


def _objects_path(bucket: str, key: str = "") -> str:
    base = f"/api/v1/buckets/{quote(bucket, safe='')}/objects"
    return f"{base}/{quote(key, safe='/')}" if key else base


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in file_chunks(path):
        digest.update(chunk)
    return digest.hexdigest()


class StorageMethods:
    """Buckets, grants and objects. Needs ``_request`` and ``_http`` from BaseClient."""

    _http: httpx.Client
    endpoint: str
    project: str | None

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    # -- buckets --------------------------------------------------------------------------

    def list_buckets(self) -> list[BucketInfo]:
        return [_bucket(b) for b in self._request("GET", "/api/v1/buckets")]

    def get_bucket(self, name: str) -> BucketInfo:
        return _bucket(self._request("GET", f"/api/v1/buckets/{quote(name, safe='')}"))

    def create_bucket(
        self,
        name: str,
        *,
        project: str | None = None,
        backend: str = "local",
        endpoint: str | None = None,
        external_bucket: str | None = None,
        prefix: str = "",
        region: str | None = None,
        credentials: tuple[str, str] | None = None,
        comment: str = "",
    ) -> BucketInfo:
        """Create bucket ``name`` in ``project`` (default: the client's project).

        ``credentials`` (access key id, secret) reach an s3 or oss backend; the server stores
        them encrypted and never returns them.
        """
        body: dict[str, Any] = {
            "name": name,
            "project": project or self.project,
            "backend": backend,
            "endpoint": endpoint,
            "external_bucket": external_bucket,
            "prefix": prefix,
            "region": region,
            "comment": comment,
        }
        if credentials:
            body["credentials"] = {
                "access_key_id": credentials[0],
                "secret_access_key": credentials[1],
            }
        return _bucket(self._request("POST", "/api/v1/buckets", json=body))

    def delete_bucket(self, name: str, *, force: bool = False) -> None:
        params = {"force": "true"} if force else None
        self._request("DELETE", f"/api/v1/buckets/{quote(name, safe='')}", params=params)

    def grant_bucket(self, name: str, project: str, *, read: bool, write: bool) -> BucketInfo:
        path = f"/api/v1/buckets/{quote(name, safe='')}/grants/{quote(project, safe='')}"
        return _bucket(self._request("PUT", path, json={"read": read, "write": write}))

    def revoke_bucket(self, name: str, project: str) -> BucketInfo:
        path = f"/api/v1/buckets/{quote(name, safe='')}/grants/{quote(project, safe='')}"
        return _bucket(self._request("DELETE", path))

    # -- objects --------------------------------------------------------------------------

    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        marker: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        params: dict[str, Any] = {"prefix": prefix, "limit": limit}
        if delimiter:
            params["delimiter"] = delimiter
        if marker:
            params["marker"] = marker
        data = self._request("GET", _objects_path(bucket), params=params)
        return Listing(
            objects=tuple(_object(o) for o in data["objects"]),
            prefixes=tuple(data["prefixes"]),
            next_marker=data.get("next_marker"),
        )

    def iter_objects(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, page after page (no folder markers)."""
        marker: str | None = None
        while True:
            page = self.list_objects(bucket, prefix, marker=marker)
            yield from page.objects
            if page.next_marker is None:
                return
            marker = page.next_marker

    def stat_object(self, bucket: str, key: str) -> ObjectInfo:
        path = f"/api/v1/buckets/{quote(bucket, safe='')}/stat/{quote(key, safe='/')}"
        return _object(self._request("GET", path))

    def put_object(
        self,
        bucket: str,
        key: str,
        source: Path | bytes,
        *,
        content_type: str | None = None,
        progress: Progress | None = None,
    ) -> ObjectInfo:
        """Upload ``source`` (a file path, streamed, or bytes) to ``oss://bucket/key``.

        The file is read twice (once to hash it for the signature, once to send it) and is
        never held in memory whole.
        """
        headers = {"content-type": content_type or "application/octet-stream"}
        if isinstance(source, bytes):
            headers[signing.CONTENT_HASH_HEADER] = hashlib.sha256(source).hexdigest()
            content: bytes | Iterator[bytes] = source
        else:
            headers[signing.CONTENT_HASH_HEADER] = file_sha256(source)
            headers["content-length"] = str(os.path.getsize(source))
            content = file_chunks(source, progress)
        data = self._request("PUT", _objects_path(bucket, key), content=content, headers=headers)
        return _object(data)

    def mkdir(self, bucket: str, key: str) -> ObjectInfo:
        """Create the folder marker ``key/`` (as ``ossutil mkdir`` does)."""
        return self.put_object(bucket, key if key.endswith("/") else key + "/", b"")

    @contextmanager
    def open_object(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[ObjectInfo, Iterator[bytes]]]:
        """Stream bytes ``[start, end)``: ``with c.open_object(b, k) as (info, chunks): ...``."""
        headers = {}
        if start or end is not None:
            headers["range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            with self._http.stream("GET", _objects_path(bucket, key), headers=headers) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    raise answer_error(answer)
                info = ObjectInfo(
                    key=key,
                    size=int(answer.headers.get("content-length", "0")),
                    modified_at=_when(answer.headers["x-liqi-modified-at"]),
                    etag=answer.headers.get("etag", "").strip('"'),
                    content_type=answer.headers.get("content-type"),
                )
                yield info, answer.iter_bytes(CHUNK_BYTES)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(
                f"Lost the connection to {self.endpoint} while reading oss://{bucket}/{key}: {exc}"
            ) from None

    def get_object(
        self, bucket: str, key: str, dest: Path, *, progress: Progress | None = None
    ) -> ObjectInfo:
        """Download to ``dest`` atomically (a temp file beside it, renamed when complete)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh, self.open_object(bucket, key) as (info, chunks):
                for chunk in chunks:
                    fh.write(chunk)
                    if progress:
                        progress(len(chunk))
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return info

    def read_object(
        self, bucket: str, key: str, *, start: int = 0, end: int | None = None
    ) -> bytes:
        with self.open_object(bucket, key, start=start, end=end) as (_, chunks):
            return b"".join(chunks)

    def write_to(self, bucket: str, key: str, out: BinaryIO) -> int:
        """Copy an object into an open binary file (``liqi oss cat``); returns bytes written."""
        written = 0
        with self.open_object(bucket, key) as (_, chunks):
            for chunk in chunks:
                out.write(chunk)
                written += len(chunk)
        return written

    def delete_object(self, bucket: str, key: str, *, recursive: bool = False) -> int:
        params = {"recursive": "true"} if recursive else None
        data = self._request("DELETE", _objects_path(bucket, key), params=params)
        return int(data["deleted"])

    def copy_object(
        self, source_uri: str, bucket: str, key: str, *, recursive: bool = False
    ) -> list[ObjectInfo]:
        """Server-side copy from ``oss://...`` to ``oss://bucket/key`` (``recursive``: a tree)."""
        body = {"source": source_uri, "key": key, "recursive": recursive}
        data = self._request("POST", f"/api/v1/buckets/{quote(bucket, safe='')}/copy", json=body)
        return [_object(o) for o in data["copied"]]

    def sign_url(self, bucket: str, key: str, *, method: str = "GET", expires_s: int = 60) -> str:
        body = {"key": key, "method": method, "expires_s": expires_s}
        data = self._request("POST", f"/api/v1/buckets/{quote(bucket, safe='')}/sign", json=body)
        return str(data["url"])
