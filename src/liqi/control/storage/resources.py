"""Resources (``add file``): files added to a project, ``odps://<project>/resources/<name>``.

The content lives in liqi's system store ``resources`` under ``<project_id>/<name>``; the row
in ``resources`` says it exists. Adding streams the body into the store (atomically: a failed
or refused upload leaves the previous content, or nothing), counting bytes on the way so that
a body over :data:`liqi.core.odps.MAX_RESOURCE_BYTES` is stopped whatever its Content-Length
said. One upload per resource at a time: a second one gets a ConflictError.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from liqi.control.db.tables import Project, Resource, utcnow
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.core import odps
from liqi.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from liqi.stores.base import ObjectReader, Store

logger = logging.getLogger(__name__)


class KeyedLocks:
    """Non-blocking locks by name: one writer per resource or dataset partition at a time.

    One server owns a LIQI_HOME (its lock file), so locks in this process are enough.
    """

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, key: str, busy: str) -> Iterator[None]:
        """Hold ``key``; raise ConflictError(``busy``) if another request holds it."""
        with self._guard:
            if key in self._held:
                raise ConflictError(busy)
            self._held.add(key)
        try:
            yield
        finally:
            with self._guard:
                self._held.discard(key)


LOCKS = KeyedLocks()


def content_key(project_id: int, name: str) -> str:
    return f"{project_id}/{odps.check_resource_name(name)}"


def _lock_key(store: Store, key: str) -> str:
    return f"{getattr(store, 'root', id(store))}/{key}"


def too_large(size: int) -> PayloadTooLargeError:
    limit = odps.MAX_RESOURCE_BYTES
    return PayloadTooLargeError(
        f"Resource of {size} bytes is over the limit of {limit} bytes "
        f"({limit / 1024**3:g} GiB) per resource; nothing was stored. Split the file or "
        "put large data in a bucket (liqi oss cp) or a dataset (liqi dataset create)."
    )


def check_declared_size(content_length: str | None) -> None:
    """Refuse an upload whose Content-Length is over the limit before reading its body."""
    if content_length is None:
        return
    if not content_length.strip().isdigit():
        raise InvalidRequestError(f"Invalid Content-Length {content_length!r}.")
    if int(content_length) > odps.MAX_RESOURCE_BYTES:
        raise too_large(int(content_length))


class SizedBody:
    """The chunks of an upload, counted and hashed; raises PayloadTooLargeError past the limit
    (read at each chunk, so a lying or chunked client is stopped in time)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.size = 0
        self._hash = hashlib.sha256()

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            if self.size > odps.MAX_RESOURCE_BYTES:
                raise too_large(self.size)
            self._hash.update(chunk)
            yield chunk

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def _not_found(project: str, name: str) -> NotFoundError:
    return NotFoundError(
        f"Resource {name!r} does not exist in project {project!r}. List them with "
        f"`liqi resource list --project {project}`."
    )


def find(session: Session, project: Project, name: str) -> Resource | None:
    stmt = select(Resource).where(Resource.project_id == project.id, Resource.name == name)
    return session.scalars(stmt).first()


def get_resource(session: Session, project: Project, name: str) -> Resource:
    odps.check_resource_name(name)
    found = find(session, project, name)
    if found is None:
        raise _not_found(project.name, name)
    return found


def list_resources(session: Session, project: Project) -> list[Resource]:
    stmt = select(Resource).where(Resource.project_id == project.id).order_by(Resource.name)
    return list(session.scalars(stmt))


@dataclass(frozen=True)
class Added:
    resource: Resource
    project: str
    replaced: bool


def add_resource(
    sessions: sessionmaker[Session],
    store: Store,
    who: Principal,
    project_name: str,
    name: str,
    chunks: Iterable[bytes],
    *,
    kind: str | None = None,
    comment: str = "",
    force: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> Added:
    """Add (with ``force``, replace) resource ``name`` from ``chunks``.

    Raises:
        AlreadyExistsError: it exists and ``force`` is false (nothing is read).
        PayloadTooLargeError: the body is over the limit (nothing is stored).
        ConflictError: another upload of the same resource is in progress.
    """
    odps.check_resource_name(name)
    chosen_kind = odps.resource_kind(name, kind)
    with sessions.begin() as session:
        project = accounts.get_project(session, who, project_name)
        project_id = project.id
    key = content_key(project_id, name)
    busy = f"Resource {name!r} of project {project_name!r} is being changed by another request."
    with LOCKS.hold(_lock_key(store, key), busy + " Try again when it is done."):
        with sessions.begin() as session:
            existed = find(session, session.get_one(Project, project_id), name) is not None
        if existed and not force:
            raise AlreadyExistsError(
                f"Resource {name!r} already exists in project {project_name!r}. Replace it "
                f"with `liqi resource add FILE --as {name} -f` (force=True in the SDK)."
            )
        body = SizedBody(chunks)
        store.put(key, body, before_commit=before_commit)
        try:
            with sessions.begin() as session:
                row = find(session, session.get_one(Project, project_id), name)
                now = utcnow()
                if row is None:
                    row = Resource(project_id=project_id, name=name, created_at=now)
                    session.add(row)
                row.kind, row.comment, row.updated_at = chosen_kind, comment, now
                row.size, row.sha256 = body.size, body.sha256
                session.flush()
        except BaseException:
            if not existed:
                store.delete(key)
            raise
    logger.info(
        "resource %s project=%s name=%s size=%d",
        "replaced" if existed else "added",
        project_name,
        name,
        body.size,
    )
    return Added(resource=row, project=project_name, replaced=existed)


def open_content(store: Store, project: Project, name: str) -> ObjectReader:
    return store.open(content_key(project.id, name))


def drop_resource(
    sessions: sessionmaker[Session], store: Store, who: Principal, project_name: str, name: str
) -> None:
    """Delete the row, then (once that is committed) the content."""
    odps.check_resource_name(name)
    with sessions.begin() as session:
        project = accounts.get_project(session, who, project_name)
        key = content_key(project.id, name)
    busy = f"Resource {name!r} of project {project_name!r} is being uploaded; drop it after."
    with LOCKS.hold(_lock_key(store, key), busy):
        with sessions.begin() as session:
            row = find(session, session.get_one(Project, project.id), name)
            if row is None:
                raise _not_found(project_name, name)
            session.delete(row)
        store.delete(key)
    logger.info("resource dropped project=%s name=%s", project_name, name)
