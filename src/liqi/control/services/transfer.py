"""Bounded transfers for staging: http(s) downloads (through the fetch policy's checked
addresses) and copies out of stores, each within a staging's limits and deadline and stopped
when it is cancelled."""

from __future__ import annotations

import logging
import shutil
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from liqi.archives import ArchiveLimits
from liqi.control.fetch_policy import FetchPolicy, open_url
from liqi.core.refs import parse_oss_uri
from liqi.errors import InvalidRequestError, StagingCancelledError, StoreError
from liqi.stores.base import Store

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class StagingLimits:
    """Bounds on what staging one instance may transfer."""

    timeout_s: float = 600.0  # the whole staging of one instance
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0  # silence from a server mid-download
    max_bytes: int = 4 * 2**30  # per download or copied folder
    max_files: int = 10_000  # objects in an oss:// processor folder, entries in an archive


class Transfer:
    """Downloads and store copies for one staging, within its limits and deadline."""

    def __init__(
        self, limits: StagingLimits, cancelled: threading.Event, policy: FetchPolicy
    ) -> None:
        self.limits = limits
        self.cancelled = cancelled
        self.policy = policy
        self.deadline = time.monotonic() + limits.timeout_s
        self.archive_limits = ArchiveLimits(
            max_total_bytes=limits.max_bytes, max_entries=limits.max_files
        )

    def check(self) -> None:
        if self.cancelled.is_set():
            raise StagingCancelledError("staging was cancelled")
        if time.monotonic() > self.deadline:
            raise StagingCancelledError(
                f"staging took longer than {self.limits.timeout_s:g} s (the staging timeout)"
            )

    def download(self, url: str, dest: Path, *, what: str) -> None:
        limit = self.limits.max_bytes
        timeout = httpx.Timeout(self.limits.read_timeout_s, connect=self.limits.connect_timeout_s)
        self.check()
        try:
            with open_url(url, self.policy, timeout=timeout, what=what) as got:
                if got.status_code != 200:
                    raise StoreError(
                        f"Cannot download the {what} {url}: HTTP {got.status_code}. Check the "
                        "URL (a public link or a presigned one that has not expired)."
                    )
                declared = got.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise StoreError(_too_big(what, url, limit, int(declared)))
                self._write(got.iter_bytes(CHUNK_BYTES), dest, what, url)
        except httpx.HTTPError as exc:
            raise StoreError(
                f"Cannot download the {what} {url}: {type(exc).__name__}: {exc or 'no answer'}."
            ) from None

    def copy_object(self, uri: str, stores: dict[str, Store], dest: Path) -> Path:
        """Copy one ``oss://`` object to ``dest``, atomically."""
        ref = parse_oss_uri(uri)
        store = _store(stores, ref.bucket, uri)
        self.check()
        info = store.stat(ref.key)
        if info.size > self.limits.max_bytes:
            raise StoreError(_too_big("file", uri, self.limits.max_bytes, info.size))
        reader = store.open(ref.key)
        try:
            self._write(reader.chunks, dest, "file", uri)
        finally:
            reader.close()
        return dest

    def copy_folder(self, uri: str, stores: dict[str, Store], dest: Path) -> None:
        """Copy every object under an ``oss://`` prefix into ``dest`` (built beside it,
        renamed when complete)."""
        ref = parse_oss_uri(uri)
        store = _store(stores, ref.bucket, uri)
        prefix = ref.key if not ref.key or ref.key.endswith("/") else ref.key + "/"
        objects = []
        total = 0
        for info in store.walk(prefix):
            self.check()
            if info.key.endswith("/"):
                continue  # folder markers
            objects.append(info)
            total += info.size
            if len(objects) > self.limits.max_files or total > self.limits.max_bytes:
                raise StoreError(
                    f"The processor folder {uri} holds more than {self.limits.max_files} files "
                    f"or {_size(self.limits.max_bytes)}; package the code as an archive "
                    "(app.tar.gz) or raise the staging limits."
                )
        if not objects:
            raise InvalidRequestError(
                f"The processor folder {uri} is empty: upload the processor's files there "
                "(e.g. `liqi oss cp -r ./proc/ " + uri.rstrip("/") + "/`), or give an archive."
            )
        tmp = dest.with_name(f".tmp-{dest.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for info in objects:
                relative = info.key[len(prefix) :]
                target = tmp.joinpath(*relative.split("/"))
                reader = store.open(info.key)
                try:
                    self._write(reader.chunks, target, "file", f"oss://{ref.bucket}/{info.key}")
                finally:
                    reader.close()
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def copy_local(self, source: Path, dest: Path, *, what: str) -> Path:
        """Copy a local file or folder into ``dest`` (links kept as links: they resolve in
        the reader's own view, never in the server's), built beside it, renamed when
        complete. Raises StoreError when it is missing or over the limits."""
        if not source.exists():
            raise StoreError(f"The {what} {source} does not exist on the server.")
        files = source.rglob("*") if source.is_dir() else iter([source])
        total = 0
        for count, path in enumerate(files, 1):  # bounded as it walks, not after
            self.check()
            info = path.lstat()
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
            if count > self.limits.max_files or total > self.limits.max_bytes:
                raise StoreError(
                    f"The {what} {source} holds more than {self.limits.max_files} files or "
                    f"{_size(self.limits.max_bytes)}; raise the staging limits "
                    "(LIQI_STAGING_MAX_MB)."
                )
        tmp = dest.with_name(f".tmp-{dest.name}")
        _remove(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if source.is_dir():
                shutil.copytree(source, tmp, symlinks=True)
            else:
                shutil.copyfile(source, tmp)
            shutil.rmtree(dest, ignore_errors=True)
            tmp.rename(dest)
        except OSError as exc:
            raise StoreError(f"Cannot copy the {what} {source}: {exc}") from None
        finally:
            _remove(tmp)
        return dest

    def _write(self, chunks: Iterable[bytes], dest: Path, what: str, source: str) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".tmp-{dest.name}")
        written = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    self.check()
                    written += len(chunk)
                    if written > self.limits.max_bytes:
                        raise StoreError(_too_big(what, source, self.limits.max_bytes))
                    out.write(chunk)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)


def _remove(path: Path) -> None:
    """Remove a file, link or folder at ``path`` if there is one."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _store(stores: dict[str, Store], bucket: str, uri: str) -> Store:
    store = stores.get(bucket)
    if store is None:  # the reconciler resolves every bucket staging reads
        raise StoreError(f"No store was resolved for {uri}.")
    return store


def _too_big(what: str, source: str, limit: int, declared: int | None = None) -> str:
    said = f" (it says {_size(declared)})" if declared is not None else ""
    return (
        f"The {what} {source} is larger than {_size(limit)}, the most staging takes "
        f"(LIQI_STAGING_MAX_MB){said}."
    )


def _size(count: int) -> str:
    return f"{count / 2**20:.0f} MiB" if count >= 2**20 else f"{count} bytes"
