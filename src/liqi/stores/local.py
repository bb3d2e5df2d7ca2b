"""The ``local`` backend: the objects of a bucket as files under one directory.

The object ``a/b`` is the file ``<root>/a/b``; the folder marker ``a/`` is the directory
``<root>/a``, so every directory is a folder marker: putting ``a/b`` makes ``a/``, deleting
``a/b`` keeps ``a/`` (nothing is pruned, so a delete never races a put into the same folder),
and deleting the marker of a folder that still holds objects returns True and keeps them. A name
cannot be both an object and a folder (``a`` and ``a/b``): that put raises ConflictError.

A put streams into a temporary file in ``tmp_dir`` (same filesystem as the root), fsyncs it,
runs ``before_commit``, then ``os.replace``-s it onto the key and fsyncs the folder; any failure
removes the temporary file and leaves the old object as it was.

Etags are the hex MD5 of the content, computed while writing and kept, with the size, mtime and
content type, in the extended attribute ``user.liqi.meta``. Without user xattrs, or for a file
changed outside liqi (size or mtime differ), the etag is ``f"{size:x}-{mtime_ns:x}"`` and the
content type None.

Every key is checked, resolved with ``realpath`` and refused (InvalidRequestError) if it lands
outside the root or goes through a symbolic link; reads use ``O_NOFOLLOW``; listings skip links.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat as stat_mode
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from liqi.core.refs import check_key, check_prefix
from liqi.errors import (
    ConfigError,
    ConflictError,
    InvalidRequestError,
    ObjectNotFoundError,
    StorageFullError,
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
)

__all__ = ["TEMP_PREFIX", "LocalStore", "check_range", "collect_page"]

META_XATTR = "user.liqi.meta"
# Names of the temporary files of puts under way (a killed server's are swept at start).
TEMP_PREFIX = ".liqi-put-"
EMPTY_MD5 = hashlib.md5(b"").hexdigest()

_REASONS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the filesystem",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only filesystem",
    errno.EIO: "I/O error",
}


def _reason(exc: OSError) -> str:
    if exc.errno is not None and exc.errno in _REASONS:
        return _REASONS[exc.errno]
    return exc.strerror or type(exc).__name__


def _write_error(key: str, exc: OSError) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"Could not write object {key!r}: {_reason(exc)} on the server's object store. "
            "Nothing was changed; free space there (delete objects or other files on that "
            "disk) and retry."
        )
    return StoreError(
        f"Could not write object {key!r}: {_reason(exc)}. Nothing was changed; "
        "fix the storage of this bucket and retry."
    )


def _listable(name: str) -> bool:
    """A file name that some key can reach (valid UTF-8, no control characters or '\\')."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\\" not in name and not any(ord(c) < 0x20 for c in name)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_range(file: BinaryIO, start: int, stop: int) -> Generator[bytes, None, None]:
    """Bytes ``[start, stop)`` of an open file in chunks; closes the file when done."""
    try:
        file.seek(start)
        remaining = stop - start
        while remaining > 0:
            data = file.read(min(CHUNK_BYTES, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data
    finally:
        file.close()


class LocalStore(Store):
    """A bucket as a directory tree under ``root``; temporary files go to ``tmp_dir``."""

    backend = "local"

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp_dir.mkdir(parents=True, exist_ok=True)
            same_disk = os.stat(root).st_dev == os.stat(tmp_dir).st_dev
        except OSError as exc:
            raise StoreError(f"Cannot use {root} for a bucket: {_reason(exc)}.") from exc
        if not same_disk:
            raise ConfigError(
                f"Temporary folder {tmp_dir} is not on the same filesystem as bucket folder "
                f"{root}: writes could not be atomic. Put both under the same LIQI_HOME."
            )
        self.root = Path(os.path.realpath(root))
        self.tmp_dir = Path(os.path.realpath(tmp_dir))
        self._root = str(self.root)
        self._tmp = str(self.tmp_dir)

    # -- paths ---------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        """The path of ``key`` (folder markers: their directory), checked to stay in the root
        without going through a link."""
        check_key(key)
        path = os.path.join(self._root, key.rstrip("/"))
        real = os.path.realpath(path)
        if os.path.commonpath([real, self._root]) != self._root or real == self._root:
            raise InvalidRequestError(f"Object key {key!r} resolves outside the bucket.")
        if real != path:
            raise InvalidRequestError(
                f"Object key {key!r} goes through a symbolic link; liqi does not follow links "
                "inside a bucket folder."
            )
        if os.path.commonpath([real, self._tmp]) == self._tmp:
            raise InvalidRequestError(f"Object key {key!r} names liqi's temporary folder.")
        return path

    def _conflict(self, key: str, path: str, *, folder: bool) -> ConflictError | None:
        """Why ``path`` cannot hold an object (``folder``: a folder), if it cannot."""
        parts = key.rstrip("/").split("/")
        current = self._root
        for index, part in enumerate(parts):
            current = os.path.join(current, part)
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return None
            last = index == len(parts) - 1
            if stat_mode.S_ISDIR(mode) and (not last or folder):
                continue
            if last and not folder and stat_mode.S_ISREG(mode):
                return None
            taken = "/".join(parts[: index + 1])
            what = "a folder" if stat_mode.S_ISDIR(mode) else "an object"
            return ConflictError(
                f"Cannot write {key!r}: {taken!r} is already {what}, and in a local bucket a "
                "name cannot be both an object and a folder. Delete it or choose another key."
            )
        return None

    def _make_dirs(self, key: str, path: str) -> None:
        """Create the folders down to ``path``, fsyncing each new one into its parent."""
        if path == self._root:
            return
        current = self._root
        for part in os.path.relpath(path, self._root).split(os.sep):
            parent, current = current, os.path.join(current, part)
            try:
                os.mkdir(current)
            except FileExistsError:
                if not stat_mode.S_ISDIR(os.lstat(current).st_mode):
                    conflict = self._conflict(key, path, folder=True)
                    raise conflict or ConflictError(f"Cannot write {key!r}.") from None
                continue
            _fsync_dir(parent)

    # -- metadata ------------------------------------------------------------------------

    def _info(self, key: str, path: str, st: os.stat_result) -> ObjectInfo:
        modified_at = datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)
        if stat_mode.S_ISDIR(st.st_mode):
            return ObjectInfo(key=key, size=0, modified_at=modified_at, etag=EMPTY_MD5)
        etag, content_type = f"{st.st_size:x}-{st.st_mtime_ns:x}", None
        try:
            meta = json.loads(os.getxattr(path, META_XATTR, follow_symlinks=False))
        except (OSError, ValueError):
            meta = None
        if (
            isinstance(meta, dict)
            and meta.get("size") == st.st_size
            and meta.get("mtime_ns") == st.st_mtime_ns
        ):
            etag, content_type = str(meta["md5"]), meta.get("content_type")
        return ObjectInfo(key, st.st_size, modified_at, etag, content_type)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as exc:
            raise StoreError(f"Could not read object {key!r}: {_reason(exc)}.") from exc
        wanted = stat_mode.S_ISDIR if key.endswith("/") else stat_mode.S_ISREG
        if st is None or not wanted(st.st_mode):
            raise ObjectNotFoundError(f"Object {key!r} does not exist.")
        return self._info(key, path, st)

    # -- writes --------------------------------------------------------------------------

    def put(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> ObjectInfo:
        path = self._path(key)
        conflict = self._conflict(key, path, folder=key.endswith("/"))
        if conflict:
            raise conflict
        if key.endswith("/"):
            return self._put_folder(key, path, chunks, before_commit)
        tmp = self._write_temp(key, chunks, content_type)
        committed = False
        try:
            if before_commit is not None:
                before_commit()
            try:
                self._make_dirs(key, os.path.dirname(path))
                if os.path.isdir(path):
                    raise self._conflict(key, path, folder=False) or ConflictError(key)
                os.replace(tmp, path)
                committed = True
            except OSError as exc:
                raise _write_error(key, exc) from exc
        finally:
            if not committed:
                _remove_quietly(tmp)
        try:
            _fsync_dir(os.path.dirname(path))
            return self._info(key, path, os.lstat(path))
        except OSError as exc:
            raise StoreError(
                f"Wrote object {key!r} but could not sync it: {_reason(exc)}."
            ) from exc

    def _write_temp(self, key: str, chunks: Iterable[bytes], content_type: str | None) -> str:
        """Stream ``chunks`` into a new fsynced temporary file and return its path."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self._tmp)
        except OSError as exc:
            raise _write_error(key, exc) from exc
        try:
            with os.fdopen(fd, "wb") as file:
                digest, size = hashlib.md5(), 0
                for chunk in chunks:
                    file.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                file.flush()
                st = os.fstat(file.fileno())
                meta = {
                    "md5": digest.hexdigest(),
                    "size": size,
                    "mtime_ns": st.st_mtime_ns,
                    "content_type": content_type,
                }
                try:
                    os.setxattr(file.fileno(), META_XATTR, json.dumps(meta).encode())
                except OSError as exc:
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
                        raise  # otherwise: no usable xattrs here, etags fall back
                os.fsync(file.fileno())
        except OSError as exc:
            _remove_quietly(tmp)
            raise _write_error(key, exc) from exc
        except BaseException:
            _remove_quietly(tmp)
            raise
        return tmp

    def _put_folder(
        self,
        key: str,
        path: str,
        chunks: Iterable[bytes],
        before_commit: Callable[[], None] | None,
    ) -> ObjectInfo:
        if any(chunks):
            raise InvalidRequestError(
                f"Folder marker {key!r} must be empty: a key ending in '/' names a folder. "
                "Drop the trailing '/' to store content."
            )
        if before_commit is not None:
            before_commit()
        try:
            self._make_dirs(key, path)
            return self._info(key, path, os.lstat(path))
        except OSError as exc:
            raise _write_error(key, exc) from exc

    def copy(self, src_key: str, dst_key: str) -> ObjectInfo:
        self._path(dst_key)
        reader = self.open(src_key)
        try:
            return self.put(dst_key, reader.chunks, content_type=reader.info.content_type)
        finally:
            reader.close()

    # -- reads ---------------------------------------------------------------------------

    def open(self, key: str, *, start: int = 0, end: int | None = None) -> ObjectReader:
        path = self._path(key)
        if key.endswith("/"):
            info = self.stat(key)
            stop = check_range(key, start, end, 0)
            return ObjectReader(info, iter(()), start, stop, lambda: None)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"Object {key!r} does not exist.") from None
        except OSError as exc:
            raise StoreError(f"Could not read object {key!r}: {_reason(exc)}.") from exc
        file = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            if not stat_mode.S_ISREG(st.st_mode):
                raise ObjectNotFoundError(f"Object {key!r} does not exist.")
            info = self._info(key, path, st)
            stop = check_range(key, start, end, st.st_size)
        except BaseException:
            file.close()
            raise
        chunks = read_range(file, start, stop)

        def close() -> None:
            chunks.close()
            file.close()

        return ObjectReader(info, chunks, start, stop, close)

    def list(
        self,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        marker: str | None = None,
        limit: int = 1000,
    ) -> Listing:
        check_prefix(prefix)
        base_key = prefix[: prefix.rfind("/") + 1]
        base = self._path(base_key) if base_key else self._root
        keys = self._walk(base_key, base, prefix, marker, descend=delimiter != "/")
        return collect_page(self._roll_up(keys, prefix, delimiter), marker=marker, limit=limit)

    def _roll_up(
        self, keys: Iterator[tuple[str, str]], prefix: str, delimiter: str | None
    ) -> Iterator[tuple[str, ObjectInfo | None]]:
        for key, path in keys:
            rest = key[len(prefix) :]
            at = rest.find(delimiter) if delimiter else -1
            if at >= 0:
                yield prefix + rest[: at + len(delimiter or "")], None
            elif not key.endswith("/"):
                try:
                    yield key, self._info(key, path, os.lstat(path))
                except FileNotFoundError:
                    continue

    def _walk(
        self, dir_key: str, dir_path: str, prefix: str, marker: str | None, *, descend: bool
    ) -> Iterator[tuple[str, str]]:
        """(key, path) of the files and folders under ``dir_path`` whose key starts with
        ``prefix``, in key order (folder ``x`` sorts as ``x/``), skipping what is <= marker."""
        entries: list[tuple[str, str]] = []
        try:
            with os.scandir(dir_path) as found:
                for entry in found:
                    if not _listable(entry.name) or entry.path == self._tmp:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        entries.append((entry.name + "/", entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        entries.append((entry.name, entry.path))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise StoreError(f"Could not list {prefix!r}: {_reason(exc)}.") from exc
        for name, path in sorted(entries):
            key = dir_key + name
            if not key.startswith(prefix):
                continue
            folder = name.endswith("/")
            if marker is None or key > marker:
                yield key, path
            elif not (folder and marker.startswith(key)):
                continue  # the key and everything under it sort before the marker
            if folder and descend:
                yield from self._walk(key, path, prefix, marker, descend=descend)

    # -- deletes -------------------------------------------------------------------------

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            if key.endswith("/"):
                os.rmdir(path)
            elif stat_mode.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
            else:
                return False
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return True  # the marker of a folder with content: the content stays
            raise StoreError(f"Could not delete object {key!r}: {_reason(exc)}.") from exc
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object and folder under ``prefix`` (links are removed, not followed)."""
        check_prefix(prefix)
        base_key = prefix[: prefix.rfind("/") + 1]
        base = self._path(base_key) if base_key else self._root
        count = 0
        try:
            for _key, path in list(self._walk(base_key, base, prefix, None, descend=False)):
                if os.path.isdir(path):
                    count += _remove_tree(path, keep=self._tmp)
                else:
                    count += _unlink_count(path)
            if base_key and base_key == prefix and os.path.isdir(base):
                count += _rmdir_count(base)
        except OSError as exc:
            raise StoreError(f"Could not delete {prefix!r}: {_reason(exc)}.") from exc
        return count


def _unlink_count(path: str) -> int:
    regular = stat_mode.S_ISREG(os.lstat(path).st_mode)
    os.unlink(path)
    return int(regular)


def _rmdir_count(path: str) -> int:
    """Remove an empty folder (1), or keep one that still holds what we must not delete (0)."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return 0
        raise
    return 1


def _remove_tree(top: str, *, keep: str) -> int:
    """Remove the folder ``top`` bottom-up without following links, sparing the folder
    ``keep`` (a temporary folder inside the root); count files and folders removed."""
    count = 0
    for current, dirs, files in os.walk(top, topdown=False, followlinks=False):
        if os.path.commonpath([current, keep]) == keep:
            continue
        for name in files:
            count += _unlink_count(os.path.join(current, name))
        for name in dirs:
            path = os.path.join(current, name)
            if os.path.islink(path):
                os.unlink(path)
            elif path != keep:
                count += _rmdir_count(path)
    return count + _rmdir_count(top)
