"""An in-memory stand-in for ``oss2.Bucket``: the methods OssStore calls, with OSS's answers.

It raises oss2's own exceptions (NoSuchKey, NotFound from HEAD, 416 InvalidRange under
``x-oss-range-behavior: standard``), lists like OSS's ListObjects (marker, delimiter,
max_keys counting objects and common prefixes, next_marker), and records every call.
``fail_next[method] = exception`` makes the next call of ``method`` raise it.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import oss2
from oss2.models import PartInfo


def server_error(cls: type[oss2.exceptions.OssError], status: int, code: str, message: str) -> Any:
    headers = {"x-oss-request-id": "5F0000000000000000000000"}
    return cls(status, headers, b"", {"Code": code, "Message": message})


def no_such_key() -> Any:
    return server_error(oss2.exceptions.NoSuchKey, 404, "NoSuchKey", "The key does not exist.")


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    etag: str
    last_modified: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Answer:
    """The parts of oss2's result objects that OssStore reads."""

    etag: str = ""
    upload_id: str = ""
    headers: dict[str, str] = field(default_factory=lambda: {"date": formatdate(usegmt=True)})


class FakeGetResult:
    def __init__(self, stored: StoredObject, start: int, stop: int, ranged: bool) -> None:
        self._data = stored.data[start:stop]
        self.content_length = stop - start
        self.content_range = f"bytes {start}-{stop - 1}/{len(stored.data)}" if ranged else None
        self.etag = stored.etag
        self.last_modified = stored.last_modified
        self.content_type = stored.content_type
        self.closed = False

    def read(self, amt: int | None = None) -> bytes:
        assert not self.closed, "read after close"
        amt = len(self._data) if amt is None else amt
        chunk, self._data = self._data[:amt], self._data[amt:]
        return chunk

    def close(self) -> None:
        self.closed = True


@dataclass
class Listed:
    object_list: list[Any]
    prefix_list: list[str]
    is_truncated: bool
    next_marker: str


@dataclass
class ListedObject:
    key: str
    last_modified: int
    etag: str
    size: int


class FakeOssBucket:
    def __init__(self, bucket_name: str = "liqi-fake") -> None:
        self.bucket_name = bucket_name
        self.objects: dict[str, StoredObject] = {}
        self.uploads: dict[str, tuple[str, dict[int, bytes], str]] = {}
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.fail_next: dict[str, BaseException] = {}
        self.opened: list[FakeGetResult] = []
        self._ids = itertools.count(1)

    def factory(self, auth: Any, endpoint: str, bucket_name: str) -> FakeOssBucket:
        """Use as ``OssStore(bucket_factory=fake.factory)``."""
        self.calls.append(("Bucket", (type(auth).__name__, endpoint, bucket_name), {}))
        return self

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        failure = self.fail_next.pop(name, None)
        if failure is not None:
            raise failure

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for method, args, _ in self.calls if method == name]

    def _store(self, key: str, data: bytes, headers: dict[str, str] | None, etag: str) -> Answer:
        content_type = (headers or {}).get("Content-Type", "application/octet-stream")
        self.objects[key] = StoredObject(data, content_type, etag)
        return Answer(etag=etag)

    def put_object(self, key: str, data: bytes, headers: dict[str, str] | None = None) -> Answer:
        self._call("put_object", key, len(data), headers=headers)
        return self._store(key, bytes(data), headers, hashlib.md5(data).hexdigest().upper())

    def init_multipart_upload(self, key: str, headers: dict[str, str] | None = None) -> Answer:
        self._call("init_multipart_upload", key, headers=headers)
        upload_id = f"upload-{next(self._ids)}"
        self.uploads[upload_id] = (key, {}, (headers or {}).get("Content-Type", ""))
        return Answer(upload_id=upload_id)

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> Answer:
        self._call("upload_part", key, upload_id, part_number, len(data))
        if upload_id not in self.uploads:
            raise server_error(oss2.exceptions.NoSuchUpload, 404, "NoSuchUpload", "No upload.")
        self.uploads[upload_id][1][part_number] = bytes(data)
        return Answer(etag=hashlib.md5(data).hexdigest().upper())

    def complete_multipart_upload(self, key: str, upload_id: str, parts: list[PartInfo]) -> Answer:
        self._call("complete_multipart_upload", key, upload_id, len(parts))
        _, stored, content_type = self.uploads.pop(upload_id)
        numbers = [part.part_number for part in parts]
        assert numbers == list(range(1, len(parts) + 1)) == sorted(stored), numbers
        for part in parts:
            assert part.etag == hashlib.md5(stored[part.part_number]).hexdigest().upper()
        data = b"".join(stored[number] for number in numbers)
        digests = b"".join(hashlib.md5(stored[n]).digest() for n in numbers)
        etag = f"{hashlib.md5(digests).hexdigest().upper()}-{len(parts)}"
        return self._store(key, data, {"Content-Type": content_type} if content_type else {}, etag)

    def abort_multipart_upload(self, key: str, upload_id: str) -> None:
        self._call("abort_multipart_upload", key, upload_id)
        self.uploads.pop(upload_id, None)

    def head_object(self, key: str) -> FakeGetResult:
        self._call("head_object", key)
        if key not in self.objects:
            raise oss2.exceptions.NotFound(404, {}, b"", {})
        stored = self.objects[key]
        return FakeGetResult(stored, 0, len(stored.data), ranged=False)

    def get_object(
        self,
        key: str,
        byte_range: tuple[int, int | None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> FakeGetResult:
        self._call("get_object", key, byte_range=byte_range, headers=headers)
        if key not in self.objects:
            raise no_such_key()
        stored = self.objects[key]
        size = len(stored.data)
        if byte_range is None:
            result = FakeGetResult(stored, 0, size, ranged=False)
        else:
            assert (headers or {}).get("x-oss-range-behavior") == "standard"
            start, last = byte_range
            if start >= size:
                raise server_error(oss2.exceptions.ServerError, 416, "InvalidRange", "Bad range.")
            stop = size if last is None else min(last + 1, size)
            result = FakeGetResult(stored, start, stop, ranged=True)
        self.opened.append(result)
        return result

    def list_objects(
        self, prefix: str = "", delimiter: str = "", marker: str = "", max_keys: int = 100
    ) -> Listed:
        self._call("list_objects", prefix=prefix, delimiter=delimiter, marker=marker)
        objects: list[Any] = []
        prefixes: list[str] = []
        last = ""
        for key in sorted(self.objects):
            if not key.startswith(prefix) or key <= marker:
                continue
            rest = key[len(prefix) :]
            if delimiter and delimiter in rest:
                common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
                if common in prefixes or common <= marker:
                    continue
                name: str | None = common
            else:
                name = None
            if len(objects) + len(prefixes) == max_keys:
                return Listed(objects, prefixes, True, last)
            if name is not None:
                prefixes.append(name)
                last = name
            else:
                stored = self.objects[key]
                objects.append(
                    ListedObject(key, stored.last_modified, f'"{stored.etag}"', len(stored.data))
                )
                last = key
        return Listed(objects, prefixes, False, "")

    def delete_object(self, key: str) -> None:
        self._call("delete_object", key)
        self.objects.pop(key, None)

    def batch_delete_objects(self, key_list: list[str]) -> None:
        self._call("batch_delete_objects", len(key_list))
        assert 0 < len(key_list) <= 1000
        for key in key_list:
            self.objects.pop(key, None)

    def copy_object(self, source_bucket_name: str, source_key: str, target_key: str) -> Answer:
        self._call("copy_object", source_bucket_name, source_key, target_key)
        if source_key not in self.objects:
            raise no_such_key()
        source = self.objects[source_key]
        self.objects[target_key] = StoredObject(source.data, source.content_type, source.etag)
        return Answer(etag=source.etag)

    def sign_url(self, method: str, key: str, expires: int, slash_safe: bool = False) -> str:
        self._call("sign_url", method, key, expires, slash_safe=slash_safe)
        return f"https://{self.bucket_name}.oss.example/{key}?Expires={expires}&Signature=fake"
