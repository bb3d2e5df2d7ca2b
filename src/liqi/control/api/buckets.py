"""Routes for buckets and their grants: ``liqi oss mb|rb|grant|revoke``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.db.tables import Bucket, Project
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.control.storage import buckets
from liqi.core.names import Role
from liqi.errors import ConflictError, InvalidRequestError, ProjectNotFoundError

router = APIRouter(prefix="/api/v1")


class Credentials(BaseModel):
    model_config = ConfigDict(extra="forbid")
    access_key_id: StrictStr = Field(max_length=256)
    secret_access_key: StrictStr = Field(max_length=512)


class BucketCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: StrictStr = Field(max_length=256)
    project: StrictStr | None = None
    backend: Literal["local", "s3", "oss"] = "local"
    endpoint: StrictStr | None = Field(default=None, max_length=1024)
    external_bucket: StrictStr | None = Field(default=None, max_length=255)
    prefix: StrictStr = Field(default="", max_length=1024)
    region: StrictStr | None = Field(default=None, max_length=64)
    credentials: Credentials | None = None
    comment: StrictStr = Field(default="", max_length=4096)


class GrantOut(BaseModel):
    project: str
    read: bool
    write: bool


class BucketOut(BaseModel):
    name: str
    project: str
    backend: str
    location: dict[str, str]
    comment: str
    created_at: datetime
    access: Literal["admin", "owner", "read", "write"]
    grants: list[GrantOut]


class GrantSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    read: StrictBool = False
    write: StrictBool = False


def _project_by_name(session: Session, name: str) -> Project:
    project = session.scalars(select(Project).where(Project.name == name)).first()
    if project is None:
        raise ProjectNotFoundError(f"Project {name!r} does not exist.")
    return project


def bucket_out(session: Session, bucket: Bucket, who: Principal) -> BucketOut:
    role = who.role_in(bucket.project_id)
    if role is Role.ADMIN:
        access: Literal["admin", "owner", "read", "write"] = "admin"
    elif role is not None:
        access = "owner"
    else:
        mine = [g for g in bucket.grants if g.project_id in who.roles]
        access = "write" if any(g.can_write for g in mine) else "read"
    names = buckets.project_names(
        session, [bucket.project_id, *(g.project_id for g in bucket.grants)]
    )
    grants = [
        GrantOut(project=names.get(g.project_id, "?"), read=g.can_read, write=g.can_write)
        for g in sorted(bucket.grants, key=lambda g: names.get(g.project_id, ""))
    ]
    return BucketOut(
        name=bucket.name,
        project=names.get(bucket.project_id, "?"),
        backend=bucket.backend,
        location={k: str(v) for k, v in json.loads(bucket.config_json or "{}").items()},
        comment=bucket.comment,
        created_at=bucket.created_at,
        access=access,
        grants=grants if role is not None else [],
    )


@router.get("/buckets")
def list_buckets(who: Who, session: DB) -> list[BucketOut]:
    return [bucket_out(session, b, who) for b in buckets.visible_buckets(session, who)]


@router.post("/buckets", status_code=201)
def create_bucket(body: BucketCreate, p: PlaneDep, who: Who, session: DB) -> BucketOut:
    if not body.project:
        raise InvalidRequestError("Say which project owns the bucket: pass --project.")
    project = accounts.get_project(session, who, body.project)
    if body.backend != "local":
        p.fetches.check_store_endpoint(body.endpoint, superuser=who.is_superuser)
    external = buckets.ExternalStore(
        endpoint=body.endpoint, bucket=body.external_bucket, prefix=body.prefix, region=body.region
    )
    bucket = buckets.create_bucket(
        session,
        p.box,
        name=body.name,
        project=project,
        backend=body.backend,
        external=external,
        credentials=body.credentials.model_dump() if body.credentials else None,
        comment=body.comment,
    )
    if bucket.backend == "local":
        (p.settings.store_dir / bucket.name).mkdir(parents=True, exist_ok=True)
    return bucket_out(session, bucket, who)


@router.get("/buckets/{name}")
def get_bucket(name: str, who: Who, session: DB) -> BucketOut:
    bucket = buckets.get_bucket(session, name)
    buckets.check_access(session, who, bucket)
    return bucket_out(session, bucket, who)


@router.delete("/buckets/{name}", status_code=204)
def delete_bucket(name: str, p: PlaneDep, who: Who, session: DB, force: bool = False) -> Response:
    bucket = buckets.get_bucket(session, name)
    buckets.check_access(session, who, bucket, manage=True)
    store = p.stores.store_for(bucket)
    if force:
        store.delete_prefix("")
    elif store.list("", limit=1).objects or store.list("", delimiter="/", limit=1).prefixes:
        raise ConflictError(
            f"Bucket {name!r} is not empty. Remove its objects first (`liqi oss rm -r "
            f"oss://{name}/`) or pass --force to delete them with it."
        )
    p.stores.forget(bucket)
    session.delete(bucket)
    if bucket.backend == "local":
        root = p.settings.store_dir / bucket.name
        if root.is_dir():
            for folder in sorted(root.rglob("*"), key=lambda x: len(x.parts), reverse=True):
                if folder.is_dir():
                    folder.rmdir()
            root.rmdir()
    return Response(status_code=204)


@router.put("/buckets/{name}/grants/{project}")
def set_grant(name: str, project: str, body: GrantSet, who: Who, session: DB) -> BucketOut:
    bucket = buckets.get_bucket(session, name)
    buckets.check_access(session, who, bucket, manage=True)
    if not body.read and not body.write:
        raise InvalidRequestError("Grant --read, --write or both; to take a grant back use revoke.")
    buckets.set_grant(
        session, bucket, _project_by_name(session, project), read=body.read, write=body.write
    )
    return bucket_out(session, bucket, who)


@router.delete("/buckets/{name}/grants/{project}")
def revoke_grant(name: str, project: str, who: Who, session: DB) -> BucketOut:
    bucket = buckets.get_bucket(session, name)
    buckets.check_access(session, who, bucket, manage=True)
    buckets.set_grant(session, bucket, _project_by_name(session, project), read=False, write=False)
    return bucket_out(session, bucket, who)
