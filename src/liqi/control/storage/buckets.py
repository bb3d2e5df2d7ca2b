"""Buckets: who may use which, and the Store behind each.

A key may read (write) a bucket when it has a role in the bucket's project, or in a project the
bucket is granted to for reading (writing). Managing the bucket (``rb``, grants) needs the
admin role in its project. A bucket a key has neither a role in nor a grant to answers exactly
like a missing one (404); a refusal for a bucket the key can see names the exact
``liqi oss grant`` command that would allow the access (the seed's RoleArn step).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import Bucket, BucketGrant, Project
from liqi.control.identity.accounts import Principal
from liqi.core.names import Role
from liqi.core.refs import check_bucket_name
from liqi.errors import (
    AlreadyExistsError,
    BucketNotFoundError,
    ConflictError,
    InvalidRequestError,
    PermissionDeniedError,
)
from liqi.stores.base import Store
from liqi.stores.local import TEMP_PREFIX, LocalStore

BACKENDS = ("local", "s3", "oss")


@dataclass(frozen=True)
class ExternalStore:
    """Where an s3 or oss bucket lives. Credentials travel separately and are stored encrypted."""

    endpoint: str | None = None
    bucket: str | None = None
    prefix: str = ""
    region: str | None = None

    def as_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v not in (None, "")})


def get_bucket(session: Session, name: str) -> Bucket:
    check_bucket_name(name)
    bucket = session.scalars(
        select(Bucket).where(Bucket.name == name).options(selectinload(Bucket.grants))
    ).first()
    if bucket is None:
        raise _not_found(name)
    return bucket


def _not_found(name: str) -> BucketNotFoundError:
    """The answer for a missing bucket, and for one the caller has no access to at all: the
    same status and text, so that a key cannot probe for other projects' buckets."""
    return BucketNotFoundError(
        f"Bucket {name!r} does not exist. Create it with `liqi oss mb oss://{name}`."
    )


def project_names(session: Session, ids: list[int]) -> dict[int, str]:
    rows = session.execute(select(Project.id, Project.name).where(Project.id.in_(ids)))
    return {row.id: row.name for row in rows}


def check_access(
    session: Session, who: Principal, bucket: Bucket, *, write: bool = False, manage: bool = False
) -> None:
    """Raise PermissionDeniedError unless ``who`` may read (write, manage) ``bucket``; a
    bucket ``who`` has neither a role in nor a grant to answers as if it did not exist."""
    role = who.role_in(bucket.project_id)
    if role is None and not any(grant.project_id in who.roles for grant in bucket.grants):
        raise _not_found(bucket.name)
    if manage:
        if role is Role.ADMIN:
            return
        owner = project_names(session, [bucket.project_id]).get(bucket.project_id, "?")
        raise PermissionDeniedError(
            f"Managing bucket {bucket.name!r} needs the admin role in its project {owner!r}; "
            f"access key {who.access_id} does not have it."
        )
    if role is not None:
        return
    for grant in bucket.grants:
        if grant.project_id in who.roles and (grant.can_write if write else grant.can_read):
            return
    mine = project_names(session, list(who.roles))
    owner = project_names(session, [bucket.project_id]).get(bucket.project_id, "?")
    project = sorted(mine.values())[0] if mine else "<your project>"
    flag = "--write" if write else "--read"
    raise PermissionDeniedError(
        f"Project {project!r} may not {'write' if write else 'read'} bucket {bucket.name!r} "
        f"(owned by project {owner!r}). An admin of {owner!r} can allow it with: "
        f"liqi oss grant oss://{bucket.name} --project {project} {flag}"
    )


def visible_buckets(session: Session, who: Principal) -> list[Bucket]:
    stmt = select(Bucket).options(selectinload(Bucket.grants)).order_by(Bucket.name)
    buckets = list(session.scalars(stmt))
    if who.is_superuser:
        return buckets
    return [
        b
        for b in buckets
        if b.project_id in who.roles or any(g.project_id in who.roles for g in b.grants)
    ]


def create_bucket(
    session: Session,
    box: SecretBox,
    *,
    name: str,
    project: Project,
    backend: str,
    external: ExternalStore,
    credentials: dict[str, str] | None,
    comment: str = "",
) -> Bucket:
    check_bucket_name(name)
    if backend not in BACKENDS:
        raise InvalidRequestError(
            f"Unknown store backend {backend!r}. Available backends: {', '.join(BACKENDS)}."
        )
    if backend != "local" and not external.bucket:
        raise InvalidRequestError(
            f"A {backend} bucket needs the name of the {backend} bucket that holds it "
            f"(--{backend}-bucket)."
        )
    if backend == "oss" and not external.endpoint:
        raise InvalidRequestError("An oss bucket needs its endpoint (--oss-endpoint).")
    if session.scalars(select(Bucket).where(Bucket.name == name)).first():
        raise AlreadyExistsError(f"Bucket {name!r} already exists; bucket names are global.")
    bucket = Bucket(
        name=name,
        project_id=project.id,
        backend=backend,
        config_json=external.as_json(),
        credentials_ciphertext=box.encrypt(json.dumps(credentials)) if credentials else None,
        comment=comment,
    )
    session.add(bucket)
    session.flush()
    return bucket


def set_grant(
    session: Session, bucket: Bucket, project: Project, *, read: bool, write: bool
) -> BucketGrant | None:
    """Grant (or with neither flag, revoke) ``project`` access to ``bucket``."""
    if project.id == bucket.project_id:
        raise ConflictError(
            f"Project {project.name!r} owns bucket {bucket.name!r}; it needs no grant."
        )
    grant = next((g for g in bucket.grants if g.project_id == project.id), None)
    if not read and not write:
        if grant is not None:
            session.delete(grant)
            bucket.grants.remove(grant)
        return None
    if grant is None:
        grant = BucketGrant(bucket_id=bucket.id, project_id=project.id)
        session.add(grant)
        bucket.grants.append(grant)
    grant.can_read = read or write
    grant.can_write = write
    session.flush()
    return grant


class StoreRegistry:
    """The Store behind each bucket, built once and reused. Thread-safe."""

    def __init__(self, store_root: Path, box: SecretBox) -> None:
        self._root = store_root
        self._box = box
        self._stores: dict[tuple[int, str], Store] = {}
        self._lock = threading.Lock()

    @property
    def tmp_dir(self) -> Path:
        return self._root / "_tmp"

    def sweep_temp_files(self) -> int:
        """Remove the temporary files of local puts a killed server left (they are never
        objects, but hold disk); returns how many. Only at start, under the home's lock: no put
        can be under way."""
        removed = 0
        if self.tmp_dir.is_dir():
            for entry in self.tmp_dir.iterdir():
                if entry.name.startswith(TEMP_PREFIX) and entry.is_file():
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    def system_store(self, name: str) -> LocalStore:
        """A store for liqi's own files (``_resources``, ``_volumes``), never a user bucket."""
        return LocalStore(self._root / f"_{name}", self.tmp_dir)

    def store_for(self, bucket: Bucket) -> Store:
        key = (bucket.id, bucket.name)
        with self._lock:
            found = self._stores.get(key)
            if found is None:
                found = self._build(bucket)
                self._stores[key] = found
            return found

    def forget(self, bucket: Bucket) -> None:
        with self._lock:
            self._stores.pop((bucket.id, bucket.name), None)

    def _build(self, bucket: Bucket) -> Store:
        config: dict[str, Any] = json.loads(bucket.config_json or "{}")
        creds: dict[str, str] = (
            json.loads(self._box.decrypt(bucket.credentials_ciphertext))
            if bucket.credentials_ciphertext
            else {}
        )
        if bucket.backend == "local":
            return LocalStore(self._root / bucket.name, self.tmp_dir)
        if bucket.backend == "s3":
            from liqi.stores.s3 import S3Store

            return S3Store(
                config["bucket"],
                prefix=config.get("prefix", ""),
                endpoint_url=config.get("endpoint"),
                region=config.get("region"),
                access_key_id=creds.get("access_key_id"),
                secret_access_key=creds.get("secret_access_key"),
            )
        from liqi.stores.oss import OssStore

        return OssStore(
            config["bucket"],
            endpoint=config["endpoint"],
            access_key_id=creds.get("access_key_id", ""),
            access_key_secret=creds.get("secret_access_key", ""),
            prefix=config.get("prefix", ""),
        )
