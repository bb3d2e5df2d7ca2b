"""The ``s3`` backend: the objects of a bucket in any S3-compatible server (AWS, MinIO, OSS's
S3 API), through boto3 (the ``liqi[s3]`` extra, imported when a store is made).

A liqi bucket is an S3 bucket plus an optional key prefix, so one S3 bucket can hold several
liqi buckets: the key ``a/b`` of a store with prefix ``liqi/models/`` is the S3 key
``liqi/models/a/b``.

Writes up to ``multipart_threshold_bytes`` are buffered and sent with one PutObject; larger ones
go up as a multipart upload of ``part_bytes`` parts, completed only after ``before_commit``
passes and aborted on any failure, so S3 never shows a partial object. Memory per write stays
under ``multipart_threshold_bytes + part_bytes``.

Errors: a missing object is :class:`ObjectNotFoundError`; anything else S3 or the network
answers is :class:`StoreError`. Messages name the key and S3's error code, never credentials.
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

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_BYTES = 5 * MiB
PRESIGN_METHODS = {
    "GET": "get_object",
    "PUT": "put_object",
    "HEAD": "head_object",
    "DELETE": "delete_object",
}
_NOT_FOUND = {"NoSuchKey", "NotFound", "404"}
_CREDENTIALS = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"}


def _etag(value: object) -> str:
    return str(value).strip('"')


def _utc(value: Any) -> datetime:
    """A datetime boto3 parsed, in UTC."""
    return value.astimezone(timezone.utc) if isinstance(value, datetime) else _now()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _response_date(response: dict[str, Any]) -> datetime:
    """The server's Date header of ``response`` (when S3 stored the object)."""
    header = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    try:
        return _utc(parsedate_to_datetime(str(header)))
    except (TypeError, ValueError):
        return _now()


def _total_size(response: dict[str, Any]) -> int:
    """The full object size from a GetObject answer ("bytes 0-9/1234" when ranged)."""
    content_range = response.get("ContentRange")
    if content_range:
        return int(str(content_range).rsplit("/", 1)[1])
    return int(response["ContentLength"])


class S3Store(Store):
    """The objects under ``prefix`` in the S3 bucket ``bucket``."""

    backend = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        multipart_threshold_bytes: int = 8 * MiB,
        part_bytes: int = 8 * MiB,
    ) -> None:
        try:
            import boto3  # type: ignore[import-untyped]
            from botocore.config import Config  # type: ignore[import-untyped]
            from botocore.exceptions import (  # type: ignore[import-untyped]
                BotoCoreError,
                ClientError,
            )
        except ImportError as exc:
            raise BackendUnavailableError(
                "The s3 store backend needs boto3: install liqi[s3] (pip install 'liqi[s3]')."
            ) from exc
        if part_bytes < MIN_PART_BYTES:
            raise ConfigError(f"S3 part size {part_bytes} is below S3's minimum of 5 MiB.")
        if prefix:
            check_prefix(prefix)
            prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.part_bytes = part_bytes
        #: Larger copies stream through this process (S3's CopyObject stops at 5 GiB).
        self.server_copy_max_bytes = 5 * 1024 * MiB
        self._errors: tuple[type[Exception], type[Exception]] = (ClientError, BotoCoreError)
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            # Checksums only where S3 requires them: many S3-compatible servers reject the
            # streaming CRC trailers that newer botocore sends by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=config,
        )

    def _full(self, key: str) -> str:
        return self.prefix + key

    @contextmanager
    def _mapped(self, action: str, key: str) -> Iterator[None]:
        """Turn boto3's exceptions into liqi's; ``action`` reads "could not <action> <key>"."""
        client_error, botocore_error = self._errors
        try:
            yield
        except client_error as exc:
            raise self._client_error(exc, action, key) from exc
        except botocore_error as exc:
            raise StoreError(f"Could not {action} {key!r}: S3 failed: {exc}.") from exc

    def _client_error(self, exc: Any, action: str, key: str) -> LiqiError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "")) or "error"
        message = str(error.get("Message", "")).rstrip(".")
        if code in _NOT_FOUND:
            return ObjectNotFoundError(f"Object {key!r} does not exist.")
        if code == "InvalidRange":
            return InvalidRequestError(f"Byte range is outside object {key!r}.")
        if code == "NoSuchBucket":
            return StoreError(
                f"Could not {action} {key!r}: S3 bucket {self.bucket!r} does not exist at "
                f"{self.endpoint_url or 'AWS'}. Create it or fix this bucket's S3 settings."
            )
        if code in _CREDENTIALS:
            return StoreError(
                f"Could not {action} {key!r}: S3 refused the request ({code}). Check the access "
                "key and secret configured for this bucket's S3 store."
            )
        return StoreError(f"Could not {action} {key!r}: S3 answered {code}: {message}.")

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
        extra = {"ContentType": content_type} if content_type else {}
        buffer, rest, large = read_head(key, chunks, self.multipart_threshold_bytes)
        if large:
            return self._put_multipart(key, buffer, rest, extra, before_commit)
        if before_commit is not None:
            before_commit()
        with self._mapped("write", key):
            response = self._client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=bytes(buffer), **extra
            )
        return ObjectInfo(
            key, len(buffer), _response_date(response), _etag(response["ETag"]), content_type
        )

    def _put_multipart(
        self,
        key: str,
        buffer: bytearray,
        rest: Iterator[bytes],
        extra: dict[str, str],
        before_commit: Callable[[], None] | None,
    ) -> ObjectInfo:
        full = self._full(key)
        with self._mapped("start an upload of", key):
            created = self._client.create_multipart_upload(Bucket=self.bucket, Key=full, **extra)
        upload_id = str(created["UploadId"])
        parts: list[dict[str, Any]] = []
        size = 0

        def send(data: bytes) -> None:
            with self._mapped("write", key):
                answer = self._client.upload_part(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    PartNumber=len(parts) + 1,
                    Body=data,
                )
            parts.append({"ETag": answer["ETag"], "PartNumber": len(parts) + 1})

        try:
            for data in split_parts(key, buffer, rest, self.part_bytes):
                send(data)
                size += len(data)
            if before_commit is not None:
                before_commit()
            with self._mapped("write", key):
                response = self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self._abort(key, upload_id)
            raise
        return ObjectInfo(
            key, size, _response_date(response), _etag(response["ETag"]), extra.get("ContentType")
        )

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self._full(key), UploadId=upload_id
            )
        except Exception as exc:  # the original failure matters more; S3 expires the rest
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
            response = self._client.copy_object(
                Bucket=self.bucket,
                Key=self._full(dst_key),
                CopySource={"Bucket": self.bucket, "Key": self._full(src_key)},
            )
        result = response["CopyObjectResult"]
        modified_at = _utc(result["LastModified"])
        return ObjectInfo(dst_key, info.size, modified_at, _etag(result["ETag"]), info.content_type)

    # -- reads ---------------------------------------------------------------------------

    def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._mapped("read", key):
            head = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        return ObjectInfo(
            key,
            int(head["ContentLength"]),
            _utc(head["LastModified"]),
            _etag(head["ETag"]),
            head.get("ContentType"),
        )

    def open(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        check_key(key)
        if start < 0 or (end is not None and end <= start):
            # Negative, reversed or empty ranges: no GET can express them.
            info = self.stat(key)
            stop = check_range(key, start, end, info.size)
            return ObjectReader(info, iter(()), start, stop, lambda: None)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full(key)}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            with self._mapped("read", key):
                response = self._client.get_object(**request)
        except InvalidRequestError:  # S3 answers 416 when start is at or past the end
            info = self.stat(key)
            stop = check_range(key, start, end, info.size)
            return ObjectReader(info, iter(()), start, stop, lambda: None)
        body = response["Body"]
        try:
            info = ObjectInfo(
                key,
                _total_size(response),
                _utc(response["LastModified"]),
                _etag(response["ETag"]),
                response.get("ContentType"),
            )
            stop = check_range(key, start, end, info.size)
        except BaseException:
            body.close()
            raise
        chunks = self._stream(key, body)

        def close() -> None:
            chunks.close()
            body.close()

        return ObjectReader(info, chunks, start, stop, close)

    def _stream(self, key: str, body: Any) -> Generator[bytes, None, None]:
        try:
            with self._mapped("read", key):
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    yield bytes(chunk)
        finally:
            body.close()

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
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self._full(prefix),
            "MaxKeys": page_size,
        }
        if delimiter:
            request["Delimiter"] = delimiter
        if marker is not None:
            request["StartAfter"] = self._full(marker)
        cut = len(self.prefix)
        while True:
            with self._mapped("list", prefix):
                page = self._client.list_objects_v2(**request)
            found: list[tuple[str, ObjectInfo | None]] = [
                (item["Prefix"][cut:], None) for item in page.get("CommonPrefixes", [])
            ]
            for item in page.get("Contents", []):
                info = ObjectInfo(
                    item["Key"][cut:],
                    int(item["Size"]),
                    _utc(item["LastModified"]),
                    _etag(item["ETag"]),
                )
                found.append((info.key, info))
            yield from sorted(found, key=lambda entry: entry[0])
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    # -- deletes -------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        with self._mapped("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._full(key))
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, a thousand per request."""
        check_prefix(prefix)
        count = 0
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        while True:
            with self._mapped("list", prefix):
                page = self._client.list_objects_v2(**request)
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                with self._mapped("delete", prefix):
                    answer = self._client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True}
                    )
                failed = answer.get("Errors", [])
                if failed:
                    first = failed[0]
                    raise StoreError(
                        f"Could not delete {len(failed)} object(s) under {prefix!r}, for example "
                        f"{first.get('Key', '')[len(self.prefix) :]!r}: {first.get('Code')}."
                    )
                count += len(keys)
            if not page.get("IsTruncated"):
                return count
            request["ContinuationToken"] = page["NextContinuationToken"]

    def presign(self, key: str, *, method: str = "GET", expires_s: int = 3600) -> str | None:
        check_key(key)
        operation = PRESIGN_METHODS.get(method.upper())
        if operation is None:
            raise InvalidRequestError(
                f"Cannot presign method {method!r}: use one of {', '.join(PRESIGN_METHODS)}."
            )
        if not 1 <= expires_s <= 7 * 24 * 3600:
            raise InvalidRequestError(
                f"Presigned URL lifetime {expires_s}s is out of range: use 1s to 7 days."
            )
        with self._mapped("presign", key):
            url = self._client.generate_presigned_url(
                ClientMethod=operation,
                Params={"Bucket": self.bucket, "Key": self._full(key)},
                ExpiresIn=expires_s,
            )
        return str(url)
