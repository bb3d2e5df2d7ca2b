"""Routes for resources (``liqi resource add|list|describe|get|drop``).

``PUT /api/v1/projects/{project}/resources/{name}`` streams the body into the store; the body's
signed hash is checked before the resource becomes visible (see control/identity/auth.py).
"""

from __future__ import annotations

from datetime import datetime

import anyio.to_thread
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.api.objects import body_chunks
from liqi.control.db.tables import Resource
from liqi.control.identity import accounts
from liqi.control.identity.auth import BODY_CHECK_SCOPE_KEY, BodyCheck
from liqi.control.storage import resources
from liqi.core.odps import ResourceUri, check_resource_name

router = APIRouter(prefix="/api/v1")


class ResourceOut(BaseModel):
    uri: str
    project: str
    name: str
    kind: str
    comment: str
    size: int
    sha256: str
    created_at: datetime
    updated_at: datetime


def resource_out(project: str, row: Resource) -> ResourceOut:
    return ResourceOut(
        uri=str(ResourceUri(project, row.name)),
        project=project,
        name=row.name,
        kind=row.kind,
        comment=row.comment,
        size=row.size,
        sha256=row.sha256,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/projects/{project}/resources")
def list_resources(project: str, who: Who, session: DB) -> list[ResourceOut]:
    found = accounts.get_project(session, who, project)
    return [resource_out(found.name, r) for r in resources.list_resources(session, found)]


@router.get("/projects/{project}/resources/{name}/content")
def get_content(project: str, name: str, p: PlaneDep, who: Who, session: DB) -> Response:
    check_resource_name(name)
    found = accounts.get_project(session, who, project)
    row = resources.get_resource(session, found, name)
    reader = resources.open_content(p.stores.system_store("resources"), found, name)
    return StreamingResponse(
        reader.chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(reader.end - reader.start),
            "x-liqi-sha256": row.sha256,
            "x-liqi-kind": row.kind,
        },
        background=BackgroundTask(reader.close),
    )


@router.get("/projects/{project}/resources/{name:path}")
def describe_resource(project: str, name: str, who: Who, session: DB) -> ResourceOut:
    check_resource_name(name)
    found = accounts.get_project(session, who, project)
    return resource_out(found.name, resources.get_resource(session, found, name))


@router.put("/projects/{project}/resources/{name:path}")
async def put_resource(
    project: str,
    name: str,
    request: Request,
    p: PlaneDep,
    who: Who,
    kind: str | None = None,
    comment: str = "",
    force: bool = False,
) -> ResourceOut:
    check_resource_name(name)  # before the body: a bad name is refused with nothing read
    resources.check_declared_size(request.headers.get("content-length"))
    check: BodyCheck = request.scope[BODY_CHECK_SCOPE_KEY]
    added = await anyio.to_thread.run_sync(
        lambda: resources.add_resource(
            p.sessions,
            p.stores.system_store("resources"),
            who,
            project,
            name,
            body_chunks(request),
            kind=kind,
            comment=comment,
            force=force,
            before_commit=check.verify,
        )
    )
    return resource_out(added.project, added.resource)


@router.delete("/projects/{project}/resources/{name:path}", status_code=204)
def drop_resource(project: str, name: str, p: PlaneDep, who: Who) -> Response:
    resources.drop_resource(p.sessions, p.stores.system_store("resources"), who, project, name)
    return Response(status_code=204)
