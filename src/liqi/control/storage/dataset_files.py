"""The files of one dataset partition, wherever they are: a folder of a Store (what users
create) or a directory of the installed package (the built-in MNIST volume).

Paths are relative to the partition, '/'-separated, and checked by
:func:`liqi.core.refs.check_key`; nothing outside the partition is ever read.
"""

from __future__ import annotations

import os
import stat as stat_mode
from abc import ABC, abstractmethod
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from liqi.core.refs import check_key
from liqi.errors import InvalidRequestError, ObjectNotFoundError
from liqi.stores.base import ObjectInfo, ObjectReader, Store, check_range
from liqi.stores.local import read_range


class FileTree(ABC):
    """The files of one version of one partition."""

    @abstractmethod
    def files(self) -> list[ObjectInfo]:
        """Every file, sorted by path (``key`` is the path in the partition)."""

    @abstractmethod
    def open(self, path: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        """Bytes ``[start, end)`` of file ``path``. Raises ObjectNotFoundError."""


def _missing(path: str) -> ObjectNotFoundError:
    return ObjectNotFoundError(
        f"The dataset has no file {path!r}. List its files with `liqi dataset ls URI`."
    )


class StoreTree(FileTree):
    """The files under ``prefix`` (ending in '/') of ``store``."""

    def __init__(self, store: Store, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def files(self) -> list[ObjectInfo]:
        cut = len(self._prefix)
        return [replace(info, key=info.key[cut:]) for info in self._store.walk(self._prefix)]

    def open(self, path: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        check_key(path, allow_folder=False)
        try:
            reader = self._store.open(self._prefix + path, start=start, end=end)
        except ObjectNotFoundError:
            raise _missing(path) from None
        return replace(reader, info=replace(reader.info, key=path))


class DirTree(FileTree):
    """The regular files under directory ``root`` (links are neither listed nor followed)."""

    def __init__(self, root: Path) -> None:
        self._root = os.path.realpath(root)

    def _info(self, path: str, st: os.stat_result) -> ObjectInfo:
        modified_at = datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)
        return ObjectInfo(path, st.st_size, modified_at, f"{st.st_size:x}-{st.st_mtime_ns:x}")

    def files(self) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        for current, dirs, names in os.walk(self._root, followlinks=False):
            dirs.sort()
            for name in names:
                full = os.path.join(current, name)
                st = os.lstat(full)
                if stat_mode.S_ISREG(st.st_mode):
                    rel = os.path.relpath(full, self._root).replace(os.sep, "/")
                    found.append(self._info(rel, st))
        return sorted(found, key=lambda info: info.key)

    def open(self, path: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        check_key(path, allow_folder=False)
        full = os.path.join(self._root, path)
        if os.path.realpath(full) != full:
            raise InvalidRequestError(f"Dataset file path {path!r} leaves the dataset.")
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise _missing(path) from None
        file = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat_mode.S_ISREG(st.st_mode):
                raise _missing(path)
            stop = check_range(path, start, end, st.st_size)
        except BaseException:
            file.close()
            raise
        chunks = read_range(file, start, stop)

        def close() -> None:
            chunks.close()
            file.close()

        return ObjectReader(self._info(path, st), chunks, start, stop, close)
