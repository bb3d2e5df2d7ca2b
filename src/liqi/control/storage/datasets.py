"""Datasets (the seed's volumes): read-only, versioned partitions addressed
``odps://<project>/volumes/<volume>/<partition>``.

A partition is never changed in place. Creating it again (``force``) builds version N+1 beside
version N and switches the row only once every file is in place; version N's files are removed
after, so a reader that already opened one of them reads it to the end. Files live in liqi's
system store ``volumes``::

    <project_id>/<volume>/<partition>/v<N>/<path>                the files of version N
    <project_id>/<volume>/<partition>/staging/<upload>/<path>    an upload not yet committed

A local directory is uploaded file by file into a staging folder, then committed with the
expected file count and size (a half upload is refused and never visible). An ``oss://``
prefix is copied server-side into a staging folder and committed the same way.

The built-in volume ``odps://algo_platform/volumes/mnist`` (partitions ``train`` and
``test``) is served from the package's files (:func:`liqi.datasets.mnist_reader.builtin_dir`),
is readable by every key and cannot be changed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from liqi.control.db.tables import Dataset, Project, utcnow
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.control.storage import buckets
from liqi.control.storage.buckets import StoreRegistry
from liqi.control.storage.dataset_files import DirTree, FileTree, StoreTree
from liqi.control.storage.resources import LOCKS
from liqi.core.odps import VolumeUri
from liqi.core.refs import check_key, parse_oss_uri
from liqi.datasets.mnist_reader import builtin_dir
from liqi.errors import (
    AlreadyExistsError,
    InvalidRequestError,
    NotFoundError,
    ObjectNotFoundError,
    PermissionDeniedError,
    StoreError,
)
from liqi.stores.base import ObjectReader
from liqi.stores.local import LocalStore

logger = logging.getLogger(__name__)

BUILTIN_PROJECT = "algo_platform"
BUILTIN_VOLUME = "mnist"
BUILTIN_PARTITIONS = {
    "train": "MNIST sample shipped with liqi: 4,000 training images (docs/datasets.md).",
    "test": "MNIST sample shipped with liqi: 1,000 test images (docs/datasets.md).",
}
UPLOAD_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
STALE_STAGING_S = 24 * 3600


@dataclass(frozen=True)
class Partition:
    """What ``describe`` shows of one partition, built-in or not."""

    uri: VolumeUri
    version: int
    source: str
    comment: str
    file_count: int
    size: int
    builtin: bool
    created_at: datetime


# -- addresses --------------------------------------------------------------------------------


def is_builtin(uri: VolumeUri) -> bool:
    return uri.project == BUILTIN_PROJECT and uri.volume == BUILTIN_VOLUME


def check_upload_id(upload: str) -> str:
    if not UPLOAD_ID_RE.fullmatch(upload):
        raise InvalidRequestError(
            f"Invalid upload id {upload!r}: use 8 to 64 letters, digits, '_' or '-' (the SDK "
            "makes one per upload)."
        )
    return upload


def partition_prefix(project_id: int, uri: VolumeUri) -> str:
    return f"{project_id}/{uri.volume}/{uri.partition}/"


def version_prefix(project_id: int, uri: VolumeUri, version: int) -> str:
    return f"{partition_prefix(project_id, uri)}v{version}/"


def staging_prefix(project_id: int, uri: VolumeUri, upload: str) -> str:
    return f"{partition_prefix(project_id, uri)}staging/{check_upload_id(upload)}/"


def _dir(store: LocalStore, prefix: str) -> Path:
    return store.root / prefix.rstrip("/")


def _not_found(uri: VolumeUri) -> NotFoundError:
    return NotFoundError(
        f"Dataset {uri} does not exist. List datasets with `liqi dataset list`; create it with "
        f"`liqi dataset create {uri} --from DIR`."
    )


def _read_only(uri: VolumeUri) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"{uri} is built into liqi and read-only: it cannot be created, replaced or dropped. "
        f"Make your own copy in your project, e.g. odps://<project>/volumes/mnist/{uri.partition}."
    )


# -- reading ----------------------------------------------------------------------------------


def _builtin(uri: VolumeUri) -> tuple[Partition, FileTree]:
    if uri.partition not in BUILTIN_PARTITIONS:
        raise NotFoundError(
            f"Dataset {uri} does not exist. The built-in volume "
            f"odps://{BUILTIN_PROJECT}/volumes/{BUILTIN_VOLUME} has partitions "
            f"{', '.join(BUILTIN_PARTITIONS)}."
        )
    tree = DirTree(builtin_dir() / uri.partition)
    files = tree.files()
    newest = max((f.modified_at for f in files), default=datetime.fromtimestamp(0, timezone.utc))
    part = Partition(
        uri=uri,
        version=1,
        source=f"liqi package data (liqi/datasets/mnist/{uri.partition})",
        comment=BUILTIN_PARTITIONS[uri.partition],
        file_count=len(files),
        size=sum(f.size for f in files),
        builtin=True,
        created_at=newest,
    )
    return part, tree


def builtin_uris() -> list[VolumeUri]:
    return [VolumeUri(BUILTIN_PROJECT, BUILTIN_VOLUME, p) for p in BUILTIN_PARTITIONS]


def _partition(project: str, row: Dataset) -> Partition:
    return Partition(
        uri=VolumeUri(project, row.name, row.partition),
        version=row.version,
        source=row.source,
        comment=row.comment,
        file_count=row.file_count,
        size=row.size,
        builtin=False,
        created_at=row.created_at,
    )


def _row(session: Session, project_id: int, uri: VolumeUri) -> Dataset | None:
    stmt = select(Dataset).where(
        Dataset.project_id == project_id,
        Dataset.name == uri.volume,
        Dataset.partition == uri.partition,
    )
    return session.scalars(stmt).first()


def open_partition(
    session: Session, who: Principal, uri: VolumeUri, store: LocalStore
) -> tuple[Partition, FileTree]:
    """The partition ``uri`` as ``who`` may read it, and the tree of its current files.

    Raises:
        ProjectNotFoundError: ``who`` has no role in the project (built-ins excepted).
        NotFoundError: no such partition.
    """
    if is_builtin(uri):
        return _builtin(uri)
    project = accounts.get_project(session, who, uri.project)
    row = _row(session, project.id, uri)
    if row is None:
        raise _not_found(uri)
    return _partition(project.name, row), StoreTree(
        store, version_prefix(project.id, uri, row.version)
    )


def describe(session: Session, who: Principal, uri: VolumeUri, store: LocalStore) -> Partition:
    return open_partition(session, who, uri, store)[0]


def visible(session: Session, who: Principal, project: str | None = None) -> list[Partition]:
    """Every partition ``who`` may read (the built-ins first), or those of ``project``."""
    if project is not None and project != BUILTIN_PROJECT:
        accounts.get_project(session, who, project)  # 404 for a project not visible
    found = [_builtin(u)[0] for u in builtin_uris() if project in (None, BUILTIN_PROJECT)]
    stmt = select(Dataset, Project.name).join(Project, Project.id == Dataset.project_id)
    if project is not None:
        stmt = stmt.where(Project.name == project)
    if not who.is_superuser:
        stmt = stmt.where(Dataset.project_id.in_(list(who.roles)))
    rows = session.execute(stmt.order_by(Project.name, Dataset.name, Dataset.partition))
    return found + [_partition(name, row) for row, name in rows]


def open_file(
    sessions: sessionmaker[Session],
    who: Principal,
    uri: VolumeUri,
    path: str,
    store: LocalStore,
    *,
    start: int = 0,
    end: int | None = None,
) -> tuple[Partition, ObjectReader]:
    """Open file ``path`` of the current version. A version switched between reading the row
    and opening the file is retried once against the new version."""
    check_key(path, allow_folder=False)
    for attempt in (1, 2):
        with sessions() as session:
            part, tree = open_partition(session, who, uri, store)
        try:
            return part, tree.open(path, start=start, end=end)
        except ObjectNotFoundError:
            if attempt == 2 or part.builtin:
                raise
            with sessions() as session:
                if describe(session, who, uri, store).version == part.version:
                    raise
    raise AssertionError("unreachable")  # pragma: no cover


# -- writing ----------------------------------------------------------------------------------


def _writable_project(sessions: sessionmaker[Session], who: Principal, uri: VolumeUri) -> int:
    if is_builtin(uri):
        raise _read_only(uri)
    with sessions() as session:
        return accounts.get_project(session, who, uri.project).id


def _exists(uri: VolumeUri, row: Dataset) -> AlreadyExistsError:
    return AlreadyExistsError(
        f"Dataset {uri} already exists (version {row.version}); partitions are read-only. "
        f"Create version {row.version + 1} with `liqi dataset create {uri} --from ... -f` "
        "(force=True in the SDK)."
    )


def upload_file(
    sessions: sessionmaker[Session],
    store: LocalStore,
    who: Principal,
    uri: VolumeUri,
    upload: str,
    path: str,
    chunks: Iterable[bytes],
    before_commit: Callable[[], None] | None,
) -> int:
    """Stage file ``path`` of upload ``upload``; returns its size. Not visible until commit."""
    check_key(path, allow_folder=False)
    check_upload_id(upload)
    project_id = _writable_project(sessions, who, uri)
    staged = staging_prefix(project_id, uri, upload) + path
    return store.put(staged, chunks, before_commit=before_commit).size


def commit_upload(
    sessions: sessionmaker[Session],
    store: LocalStore,
    who: Principal,
    uri: VolumeUri,
    upload: str,
    *,
    file_count: int,
    size: int,
    source: str,
    comment: str = "",
    force: bool = False,
) -> Partition:
    """Publish upload ``upload`` as the next version of ``uri`` if it holds exactly
    ``file_count`` files of ``size`` bytes in total; otherwise drop it."""
    project_id = _writable_project(sessions, who, uri)
    staged = staging_prefix(project_id, uri, upload)
    try:
        return _publish(
            sessions, store, who, uri, project_id, staged,
            expected=(file_count, size), source=source, comment=comment, force=force,
        )  # fmt: skip
    finally:
        shutil.rmtree(_dir(store, staged), ignore_errors=True)


def create_from_oss(
    sessions: sessionmaker[Session],
    stores: StoreRegistry,
    who: Principal,
    uri: VolumeUri,
    source: str,
    *,
    comment: str = "",
    force: bool = False,
) -> Partition:
    """Copy every object under the ``oss://`` prefix ``source`` into a new version of ``uri``.

    Raises:
        PermissionDeniedError: ``who`` may not read the bucket (the message shows the grant).
        NotFoundError: no object under the prefix.
    """
    src = parse_oss_uri(source)
    project_id = _writable_project(sessions, who, uri)
    with sessions() as session:
        row = _row(session, project_id, uri)
        if row is not None and not force:
            raise _exists(uri, row)
        bucket = buckets.get_bucket(session, src.bucket)
        buckets.check_access(session, who, bucket)
        src_store = stores.store_for(bucket)
    prefix = src.key if src.is_folder else src.key + "/"
    store = stores.system_store("volumes")
    staged = staging_prefix(project_id, uri, uuid.uuid4().hex)
    count = size = 0
    try:
        for info in list(src_store.walk(prefix)):
            reader = src_store.open(info.key)
            try:
                size += store.put(staged + info.key[len(prefix) :], reader.chunks).size
            finally:
                reader.close()
            count += 1
        if count == 0:
            raise NotFoundError(
                f"There is no object under oss://{src.bucket}/{prefix}: a dataset needs at "
                f"least one file. Check the prefix with `liqi oss ls oss://{src.bucket}/{prefix}`."
            )
        clean = f"oss://{src.bucket}/{prefix}"
        return _publish(
            sessions, store, who, uri, project_id, staged,
            expected=(count, size), source=clean, comment=comment, force=force,
        )  # fmt: skip
    finally:
        shutil.rmtree(_dir(store, staged), ignore_errors=True)


def _publish(
    sessions: sessionmaker[Session],
    store: LocalStore,
    who: Principal,
    uri: VolumeUri,
    project_id: int,
    staged: str,
    *,
    expected: tuple[int, int],
    source: str,
    comment: str,
    force: bool,
) -> Partition:
    busy = f"Dataset {uri} is being created or dropped by another request; try again after."
    with LOCKS.hold(str(_dir(store, partition_prefix(project_id, uri))), busy):
        with sessions() as session:
            project = accounts.get_project(session, who, uri.project)
            row = _row(session, project.id, uri)
            if row is not None and not force:
                raise _exists(uri, row)
            old = row.version if row is not None else 0
        files = list(store.walk(staged))
        found = (len(files), sum(f.size for f in files))
        if found[0] == 0:
            raise InvalidRequestError(
                f"The upload for {uri} holds no file: upload the files first (the SDK's "
                "create_dataset does both), or check the upload id."
            )
        if found != expected:
            raise InvalidRequestError(
                f"Incomplete upload for {uri}: expected {expected[0]} files of {expected[1]} "
                f"bytes in total, the server has {found[0]} files of {found[1]} bytes. Nothing "
                "was published; run the create again."
            )
        new = old + 1
        target = _dir(store, version_prefix(project_id, uri, new))
        shutil.rmtree(target, ignore_errors=True)  # a leftover of a crash, never visible
        try:
            os.rename(_dir(store, staged), target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise StoreError(
                f"Could not publish {uri} version {new}: {exc.strerror}. Nothing changed."
            ) from exc
        try:
            with sessions.begin() as session:
                row = _row(session, project_id, uri)
                if row is None:
                    row = Dataset(project_id=project_id, name=uri.volume, partition=uri.partition)
                    session.add(row)
                row.version, row.source, row.comment = new, source, comment
                row.file_count, row.size = found
                row.is_builtin, row.created_at = False, utcnow()
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        if old:
            shutil.rmtree(_dir(store, version_prefix(project_id, uri, old)), ignore_errors=True)
        _sweep_staging(store, project_id, uri)
    logger.info("dataset published uri=%s version=%d files=%d", uri, new, found[0])
    return _partition(uri.project, row)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_staging(store: LocalStore, project_id: int, uri: VolumeUri) -> None:
    """Remove uploads of this partition abandoned more than a day ago."""
    staging = _dir(store, partition_prefix(project_id, uri)) / "staging"
    if not staging.is_dir():
        return
    cutoff = time.time() - STALE_STAGING_S
    with contextlib.suppress(OSError):  # housekeeping: never fails the request
        for entry in staging.iterdir():
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def drop(
    sessions: sessionmaker[Session], store: LocalStore, who: Principal, uri: VolumeUri
) -> None:
    """Delete the row (committed first), then every version and staged upload."""
    project_id = _writable_project(sessions, who, uri)
    folder = _dir(store, partition_prefix(project_id, uri))
    with LOCKS.hold(str(folder), f"Dataset {uri} is being created; drop it after."):
        with sessions.begin() as session:
            row = _row(session, project_id, uri)
            if row is None:
                raise _not_found(uri)
            session.delete(row)
        shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        folder.parent.rmdir()  # the volume's folder, once its last partition is gone
    logger.info("dataset dropped uri=%s", uri)
