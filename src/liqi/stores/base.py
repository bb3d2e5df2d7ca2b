"""The Store seam: the objects of one bucket, in some storage system.

A Store is bound to one bucket (a local folder, an S3 bucket plus an optional key prefix, an
OSS bucket). Keys are checked by :func:`liqi.core.refs.check_key` before they reach a Store;
implementations check again where a bad key could escape their root (defence in depth).

Contract shared by every implementation (tested by one parametrized suite):

- ``put`` is atomic: a reader sees the old object or the whole new one, never a part; an
  exception from the chunks, from ``before_commit`` or from the storage system leaves the old
  object (or no object) in place and nothing partial behind.
- Data is streamed: no method holds a whole object in memory.
- Keys ending in ``/`` are folder markers (as ``ossutil mkdir`` makes them). ``list`` never
  returns them in ``objects``; with ``delimiter="/"`` folders appear in ``prefixes``.
- Missing objects raise :class:`ObjectNotFoundError`; failures of the storage system raise
  :class:`StoreError` (both from :mod:`liqi.errors`), never a backend's own exception.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from liqi.errors import InvalidRequestError, StoreError

CHUNK_BYTES = 1024 * 1024
MAX_PARTS = 10_000  # S3's and OSS's limit on the parts of a multipart upload


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified_at: datetime
    etag: str
    content_type: str | None = None


@dataclass(frozen=True)
class Listing:
    """One page of a listing, sorted by key. Pass ``next_marker`` back to get the next."""

    objects: tuple[ObjectInfo, ...]
    prefixes: tuple[str, ...]
    next_marker: str | None = None


@dataclass(frozen=True)
class ObjectReader:
    """An opened object: its info and an iterator over the requested byte range.

    The caller must exhaust or ``close()`` it; it may hold a file or a connection.
    """

    info: ObjectInfo
    chunks: Iterator[bytes]
    start: int
    end: int  # exclusive
    close: Callable[[], None]


def file_chunks(path: Path, progress: Callable[[int], None] | None = None) -> Iterator[bytes]:
    """A local file in CHUNK_BYTES pieces (for ``Store.put``), each size told to ``progress``."""
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            if progress:
                progress(len(chunk))
            yield chunk


def read_head(
    key: str, chunks: Iterable[bytes], threshold_bytes: int
) -> tuple[bytearray, Iterator[bytes], bool]:
    """Buffer the start of a body, up to just past ``threshold_bytes``.

    Returns the buffer, the unread rest, and whether the body is larger than the threshold
    (then it should go up in parts). A folder marker (key ending in '/') with content is an
    InvalidRequestError.
    """
    buffer = bytearray()
    rest = iter(chunks)
    for chunk in rest:
        buffer += chunk
        if key.endswith("/") and buffer:
            raise InvalidRequestError(
                f"Folder marker {key!r} must be empty: a key ending in '/' names a folder. "
                "Drop the trailing '/' to store content."
            )
        if len(buffer) > threshold_bytes:
            return buffer, rest, True
    return buffer, rest, False


def split_parts(
    key: str, buffer: bytearray, rest: Iterator[bytes], part_bytes: int
) -> Iterator[bytes]:
    """The body (``buffer`` then ``rest``) as parts of ``part_bytes``, the last one shorter;
    at least one part. Raises StoreError past :data:`MAX_PARTS` parts."""
    count = 0

    def counted(data: bytes) -> bytes:
        nonlocal count
        count += 1
        if count > MAX_PARTS:
            raise StoreError(
                f"Could not write {key!r}: it needs more than {MAX_PARTS} parts of "
                f"{part_bytes} bytes. Raise the store's part size."
            )
        return data

    for chunk in rest:
        buffer += chunk
        while len(buffer) >= part_bytes:
            yield counted(bytes(buffer[:part_bytes]))
            del buffer[:part_bytes]
    if buffer or count == 0:
        yield counted(bytes(buffer))


def check_range(key: str, start: int, end: int | None, size: int) -> int:
    """The exclusive end of ``[start, end)`` in an object of ``size`` bytes.

    Raises:
        InvalidRequestError: the range is not inside the object.
    """
    stop = size if end is None else end
    if start < 0 or stop < start or stop > size:
        shown = "end" if end is None else end
        raise InvalidRequestError(
            f"Byte range [{start}, {shown}) is outside object {key!r} of {size} bytes: "
            f"ask for a range between 0 and {size}."
        )
    return stop


def collect_page(
    entries: Iterable[tuple[str, ObjectInfo | None]], *, marker: str | None, limit: int
) -> Listing:
    """One page from ``entries``, sorted by name: objects (with their info) and common
    prefixes (info None). Skips folder markers, repeated prefixes and names up to ``marker``;
    reads one entry past ``limit`` to know whether there is a next page."""
    if limit < 1:
        raise InvalidRequestError(f"Listing limit {limit} is too small: use 1 or more.")
    objects: list[ObjectInfo] = []
    prefixes: list[str] = []
    last: str | None = None
    for name, info in entries:
        if (marker is not None and name <= marker) or name == last:
            continue
        if info is not None and name.endswith("/"):
            continue
        if len(objects) + len(prefixes) == limit:
            return Listing(tuple(objects), tuple(prefixes), next_marker=last)
        if info is None:
            prefixes.append(name)
        else:
            objects.append(info)
        last = name
    return Listing(tuple(objects), tuple(prefixes))


class Store(ABC):
    """The objects of one bucket. Thread-safe: one instance serves concurrent requests."""

    backend: ClassVar[str]

    @abstractmethod
    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> ObjectInfo:
        """Write ``key`` from ``chunks``, atomically.

        ``before_commit`` runs after the last chunk is stored and before the object becomes
        visible; if it raises, the write is abandoned and the exception propagates (the
        control plane uses it to check the body's signed hash).

        Raises:
            StoreError: the storage system failed (for example the disk is full).
            InvalidRequestError: a folder marker (key ending in '/') with content.
            ConflictError: the key clashes with a folder or an object (local stores).
        """

    @abstractmethod
    def open(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        """Open bytes ``[start, end)`` of ``key`` (``end`` None: to the end).

        A range is valid when ``0 <= start <= end <= size`` (empty ranges included); an ``end``
        past the size is an error, not clamped (the HTTP layer clamps ``Range`` headers).

        Raises:
            ObjectNotFoundError: no such object.
            InvalidRequestError: the range is outside the object.
        """

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo:
        """Size, time and etag of ``key``. Raises ObjectNotFoundError."""

    @abstractmethod
    def list(
        self,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        marker: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        """Up to ``limit`` keys starting with ``prefix`` and greater than ``marker``."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete ``key`` (an object or a folder marker); False when it did not exist."""

    @abstractmethod
    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        """Copy within this store, atomically at the destination. Raises ObjectNotFoundError."""

    def presign(self, key: str, *, method: str = "GET", expires_s: int = 3600) -> str | None:
        """A URL that allows ``method`` on ``key`` without credentials until it expires, or
        None when the storage system cannot make one (the control plane then signs its own)."""
        return None

    def exists(self, key: str) -> bool:
        from liqi.errors import ObjectNotFoundError

        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def walk(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (no folder markers), page after page."""
        marker: str | None = None
        while True:
            page = self.list(prefix, marker=marker)
            yield from page.objects
            if page.next_marker is None:
                return
            marker = page.next_marker

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object and folder marker under ``prefix``; returns how many."""
        count = 0
        for info in list(self.walk(prefix)):
            count += self.delete(info.key)
        for marker in self._folder_markers(prefix):
            count += self.delete(marker)
        return count

    def _folder_markers(self, prefix: str) -> builtins.list[str]:
        """Folder markers under ``prefix``, deepest first."""
        found: builtins.list[str] = []
        pending = [prefix] if prefix == "" or prefix.endswith("/") else [prefix + "/"]
        while pending:
            current = pending.pop()
            if current and self.exists(current):
                found.append(current)
            page_marker: str | None = None
            while True:
                page = self.list(current, delimiter="/", marker=page_marker)
                pending.extend(p for p in page.prefixes if p != current)
                if page.next_marker is None:
                    break
                page_marker = page.next_marker
        return sorted(found, key=len, reverse=True)
