"""The ``oss`` backend: the objects of a bucket in Alibaba Cloud OSS, through ``oss2`` (the
``liqi[oss]`` extra, imported when a store is made).

Like the ``s3`` backend, a liqi bucket is an OSS bucket plus an optional key prefix. Writes up
to ``multipart_threshold_bytes`` go up with one PutObject; larger ones as a multipart upload of
``part_bytes`` parts (OSS's minimum is 100 KiB), completed only after ``before_commit`` passes
and aborted on any failure. Range reads ask OSS for standard range behaviour
(``x-oss-range-behavior: standard``), so a range past the end is refused instead of silently
answered with the whole object.

Errors: a missing object is :class:`ObjectNotFoundError`; anything else OSS or the network
answers is :class:`StoreError`, with OSS's error code and request id, never credentials.

``bucket_factory(auth, endpoint, bucket_name)`` builds the ``oss2.Bucket``; tests pass an
in-memory fake with the same methods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

from liqi.core.refs import check_key, check_prefix
from liqi.errors import (
    BackendUnavailableError,
    ConfigError,
    InvalidRequestError,
    LiqiError,
    ObjectNotFoundError,
    StoreError,
)
from liqi.stores.base import (
    CHUNK_BYTES,
    Listing,
    ObjectInfo,
    ObjectReader,
    Store,
    check_range,
    collect_page,
    read_head,
    split_parts,
)

__all__ = ["OssStore"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_BYTES = 100 * 1024
PRESIGN_METHODS = ("GET", "PUT", "HEAD", "DELETE")
RANGE_HEADERS = {"x-oss-range-behavior": "standard"}
_CREDENTIALS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _etag(value: object) -> str:
    return str(value).strip('"')


def _from_unix(value: object) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return datetime.now(timezone.utc)


def _answer_date(result: Any) -> datetime:
    """The server's Date header of an oss2 result (when OSS stored the object)."""
    try:
        return parsedate_to_datetime(str(result.headers["date"])).astimezone(timezone.utc)
    except (AttributeError, KeyError, TypeError, ValueError):
        return datetime.now(timezone.utc)


class OssStore(Store):
    """The objects under ``prefix`` in the OSS bucket ``bucket`` at ``endpoint``."""

    backend = "oss"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        prefix: str = "",
        bucket_factory: Callable[[Any, str, str], Any] | None = None,
        multipart_threshold_bytes: int = 8 * MiB,
        part_bytes: int = 8 * MiB,
    ) -> None:
        try:
            import oss2  # type: ignore[import-untyped]
        except ImportError as exc:
            raise BackendUnavailableError(
                "The oss store backend needs oss2: install liqi[oss] (pip install 'liqi[oss]')."
            ) from exc
        if part_bytes < MIN_PART_BYTES:
            raise ConfigError(f"OSS part size {part_bytes} is below OSS's minimum of 100 KiB.")
        if prefix:
            check_prefix(prefix)
            prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint = endpoint
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.part_bytes = part_bytes
        #: Larger copies stream through this process (OSS's CopyObject stops at 1 GiB).
        self.server_copy_max_bytes = 1024 * MiB
        self._oss2 = oss2
        factory = bucket_factory or oss2.Bucket
        self._bucket = factory(oss2.Auth(access_key_id, access_key_secret), endpoint, bucket)

    def _full(self, key: str) -> str:
        return self.prefix + key

    @contextmanager
    def _mapped(self, action: str, key: str) -> Iterator[None]:
        """Turn oss2's exceptions into liqi's; ``action`` reads "could not <action> <key>"."""
        try:
            yield
        except self._oss2.exceptions.OssError as exc:
            raise self._oss_error(exc, action, key) from exc

    def _oss_error(self, exc: Any, action: str, key: str) -> LiqiError:
        errors = self._oss2.exceptions
        code, status = str(exc.code or ""), int(exc.status)
        if isinstance(exc, errors.NoSuchBucket) or code == "NoSuchBucket":
            return StoreError(
                f"Could not {action} {key!r}: OSS bucket {self.bucket!r} does not exist at "
                f"{self.endpoint}. Create it or fix this bucket's OSS settings."
            )
        if code == "NoSuchKey" or (status == 404 and not code):  # HEAD 404s carry no code
            return ObjectNotFoundError(f"Object {key!r} does not exist.")
        if code == "InvalidRange" or status == 416:
            return InvalidRequestError(f"Byte range is outside object {key!r}.")
        if code in _CREDENTIALS or status == 403:
            return StoreError(
                f"Could not {action} {key!r}: OSS refused the request ({code or status}). "
                "Check the AccessKey ID and secret configured for this bucket's OSS store."
            )
        if isinstance(exc, errors.RequestError):
            return StoreError(f"Could not {action} {key!r}: OSS at {self.endpoint} unreachable.")
        request_id = f" (request id {exc.request_id})" if exc.request_id else ""
        detail = f"{code}: {exc.message}" if code else f"HTTP {status}"
        return StoreError(f"Could not {action} {key!r}: OSS answered {detail}{request_id}.")

    # -- writes --------------------------------------------------------------------------

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        headers = {"Content-Type": content_type} if content_type else None
        buffer, rest, large = read_head(key, chunks, self.multipart_threshold_bytes)
        if large:
            return self._put_multipart(key, buffer, rest, headers, before_commit)
        if before_commit is not None:
            before_commit()
        with self._mapped("write", key):
            result = self._bucket.put_object(self._full(key), bytes(buffer), headers=headers)
        return ObjectInfo(key, len(buffer), _answer_date(result), _etag(result.etag), content_type)

    def _put_multipart(
        self,
        key: str,
        buffer: bytearray,
        rest: Iterator[bytes],
        headers: dict[str, str] | None,
        before_commit: Callable[[], None] | None,
    ) -> ObjectInfo:
        full = self._full(key)
        with self._mapped("start an upload of", key):
            upload_id = str(self._bucket.init_multipart_upload(full, headers=headers).upload_id)
        parts: list[Any] = []
        size = 0

        def send(data: bytes) -> None:
            number = len(parts) + 1
            with self._mapped("write", key):
                answer = self._bucket.upload_part(full, upload_id, number, data)
            parts.append(self._oss2.models.PartInfo(number, answer.etag))

        try:
            for data in split_parts(key, buffer, rest, self.part_bytes):
                send(data)
                size += len(data)
            if before_commit is not None:
                before_commit()
            with self._mapped("write", key):
                result = self._bucket.complete_multipart_upload(full, upload_id, parts)
        except BaseException:
            self._abort(key, upload_id)
            raise
        content_type = headers["Content-Type"] if headers else None
        return ObjectInfo(key, size, _answer_date(result), _etag(result.etag), content_type)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._bucket.abort_multipart_upload(self._full(key), upload_id)
        except Exception as exc:  # the original failure matters more
            log.warning(
                "could not abort multipart upload key=%s upload_id=%s: %s", key, upload_id, exc
            )

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        check_key(dst_key)
        info = self.stat(src_key)
        if src_key == dst_key:
            return info
        if info.size > self.server_copy_max_bytes:
            reader = self.open(src_key)
            try:
                return self.put(dst_key, reader.chunks, content_type=info.content_type)
            finally:
                reader.close()
        if dst_key.endswith("/") and info.size:
            raise InvalidRequestError(f"Cannot copy {src_key!r} onto folder marker {dst_key!r}.")
        with self._mapped("copy to", dst_key):
            result = self._bucket.copy_object(self.bucket, self._full(src_key), self._full(dst_key))
        return ObjectInfo(
            dst_key, info.size, _answer_date(result), _etag(result.etag), info.content_type
        )

    # -- reads ---------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._mapped("read", key):
            head = self._bucket.head_object(self._full(key))
        return ObjectInfo(
            key,
            int(head.content_length or 0),
            _from_unix(head.last_modified),
            _etag(head.etag),
            head.content_type,
        )

    def open(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        check_key(key)
        if start < 0 or (end is not None and end <= start):
            info = self.stat(key)
            stop = check_range(key, start, end, info.size)
            return ObjectReader(info, iter(()), start, stop, lambda: None)
        byte_range = None
        if start or end is not None:
            byte_range = (start, None if end is None else end - 1)
        try:
            with self._mapped("read", key):
                result = self._bucket.get_object(
                    self._full(key), byte_range=byte_range, headers=dict(RANGE_HEADERS)
                )
        except InvalidRequestError:  # OSS answers 416 when start is at or past the end
            info = self.stat(key)
            stop = check_range(key, start, end, info.size)
            return ObjectReader(info, iter(()), start, stop, lambda: None)
        try:
            size = int(result.content_length or 0)
            if result.content_range:
                size = int(str(result.content_range).rsplit("/", 1)[1])
            info = ObjectInfo(
                key,
                size,
                _from_unix(result.last_modified),
                _etag(result.etag),
                result.content_type,
            )
            stop = check_range(key, start, end, info.size)
        except BaseException:
            result.close()
            raise
        chunks = self._stream(key, result)

        def close() -> None:
            chunks.close()
            result.close()

        return ObjectReader(info, chunks, start, stop, close)

    def _stream(self, key: str, result: Any) -> Generator[bytes, None, None]:
        try:
            with self._mapped("read", key):
                while True:
                    chunk = result.read(CHUNK_BYTES)
                    if not chunk:
                        return
                    yield bytes(chunk)
        finally:
            result.close()

    def list(
        self,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        marker: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        check_prefix(prefix)
        entries = self._entries(prefix, delimiter, marker, page_size=min(limit + 1, 1000))
        return collect_page(entries, marker=marker, limit=limit)

    def _entries(
        self, prefix: str, delimiter: str | None, marker: str | None, *, page_size: int
    ) -> Iterator[tuple[str, ObjectInfo | None]]:
        """Objects and common prefixes after ``marker``, in key order, page after page."""
        cut = len(self.prefix)
        oss_marker = "" if marker is None else self._full(marker)
        while True:
            with self._mapped("list", prefix):
                page = self._bucket.list_objects(
                    prefix=self._full(prefix),
                    delimiter=delimiter or "",
                    marker=oss_marker,
                    max_keys=page_size,
                )
            found: list[tuple[str, ObjectInfo | None]] = [
                (name[cut:], None) for name in page.prefix_list
            ]
            for item in page.object_list:
                info = ObjectInfo(
                    item.key[cut:], int(item.size), _from_unix(item.last_modified), _etag(item.etag)
                )
                found.append((info.key, info))
            yield from sorted(found, key=lambda entry: entry[0])
            if not page.is_truncated:
                return
            oss_marker = page.next_marker

    # -- deletes -------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        with self._mapped("delete", key):
            self._bucket.delete_object(self._full(key))
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, a thousand per request."""
        check_prefix(prefix)
        count = 0
        oss_marker = ""
        while True:
            with self._mapped("list", prefix):
                page = self._bucket.list_objects(
                    prefix=self._full(prefix), marker=oss_marker, max_keys=1000
                )
            keys = [item.key for item in page.object_list]
            if keys:
                with self._mapped("delete", prefix):
                    self._bucket.batch_delete_objects(keys)
                count += len(keys)
            if not page.is_truncated:
                return count
            oss_marker = page.next_marker

    def presign(self, key: str, *, method: str = "GET", expires_s: int = 3600) -> str | None:
        check_key(key)
        if method.upper() not in PRESIGN_METHODS:
            raise InvalidRequestError(
                f"Cannot presign method {method!r}: use one of {', '.join(PRESIGN_METHODS)}."
            )
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise InvalidRequestError(
                f"Presigned URL lifetime {expires_s}s is out of range: use 1s to 7 days."
            )
        with self._mapped("presign", key):
            url = self._bucket.sign_url(method.upper(), self._full(key), expires_s, slash_safe=True)
        return str(url)
