"""Routes for the server, projects and access keys."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from liqi._version import __version__
from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.api.schemas import (
    KeyCreate,
    KeyCreated,
    KeyOut,
    ProjectCreate,
    ProjectOut,
    RoleGrant,
    ServerInfo,
    WhoAmI,
)
from liqi.control.db.tables import AccessKey, Bucket, Project, utcnow
from liqi.control.identity import accounts
from liqi.core.names import Role
from liqi.errors import ConflictError

router = APIRouter(prefix="/api/v1")


def project_out(project: Project, who: accounts.Principal) -> ProjectOut:
    role = who.role_in(project.id)
    assert role is not None
    return ProjectOut(
        name=project.name, description=project.description, created_at=project.created_at, role=role
    )


def key_out(key: AccessKey, who: accounts.Principal) -> KeyOut:
    roles = {
        b.project.name: Role(b.role)
        for b in key.bindings
        if who.role_in(b.project_id) is not None or key.id == who.key_id
    }
    return KeyOut(
        access_id=key.access_id,
        name=key.name,
        is_superuser=key.is_superuser,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
        roles=roles,
    )


@router.get("/server")
def server_info(p: PlaneDep, _who: Who) -> ServerInfo:
    return ServerInfo(
        version=__version__,
        pid=p.pid,
        started_at=p.started_at,
        uptime_s=p.uptime_s(),
        database=p.engine.dialect.name,
    )


@router.get("/whoami")
def whoami(who: Who, session: DB) -> WhoAmI:
    projects = accounts.visible_projects(session, who)
    return WhoAmI(
        access_id=who.access_id,
        is_superuser=who.is_superuser,
        projects={p.name: who.role_in(p.id) or Role.MEMBER for p in projects},
    )


@router.get("/projects")
def list_projects(who: Who, session: DB) -> list[ProjectOut]:
    return [project_out(p, who) for p in accounts.visible_projects(session, who)]


@router.post("/projects", status_code=201)
def create_project(body: ProjectCreate, who: Who, session: DB) -> ProjectOut:
    project = accounts.create_project(session, who, body.name, body.description)
    return project_out(project, who)


@router.get("/projects/{name}")
def get_project(name: str, who: Who, session: DB) -> ProjectOut:
    return project_out(accounts.get_project(session, who, name), who)


@router.delete("/projects/{name}", status_code=204)
def delete_project(name: str, p: PlaneDep, who: Who, session: DB) -> Response:
    project = accounts.get_project(session, who, name, needs=Role.ADMIN)
    owned = session.scalars(select(Bucket.name).where(Bucket.project_id == project.id)).all()
    if owned:
        listed = ", ".join(f"oss://{b}" for b in sorted(owned))
        raise ConflictError(
            f"Project {name!r} still owns bucket(s) {listed}. Remove them first with "
            "`liqi oss rb --force oss://<bucket>`; nothing was deleted."
        )
    project_id = project.id
    accounts.delete_project(session, who, name)
    session.flush()
    # The project's resources and volumes go with it (their rows cascade in the database).
    for kind in ("resources", "volumes"):
        p.stores.system_store(kind).delete_prefix(f"{project_id}/")
    return Response(status_code=204)


@router.get("/keys")
def list_keys(who: Who, session: DB, project: str | None = None) -> list[KeyOut]:
    scope = accounts.get_project(session, who, project, needs=Role.ADMIN) if project else None
    return [key_out(k, who) for k in accounts.keys_visible_to(session, who, scope)]


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, p: PlaneDep, who: Who, session: DB) -> KeyCreated:
    project = (
        accounts.get_project(session, who, body.project, needs=Role.ADMIN) if body.project else None
    )
    new = accounts.create_key(
        session,
        p.box,
        who,
        project=project,
        role=body.role,
        name=body.name,
        superuser=body.superuser,
        access_id=body.access_id,
        secret=body.secret,
    )
    out = key_out(new.key, who)
    shown = None if body.secret is not None else new.secret
    return KeyCreated(**out.model_dump(), secret=shown)


@router.delete("/keys/{access_id}")
def revoke_key(access_id: str, who: Who, session: DB) -> KeyOut:
    return key_out(accounts.revoke_key(session, who, access_id, now=utcnow()), who)


@router.put("/keys/{access_id}/roles/{project}")
def grant_role(access_id: str, project: str, body: RoleGrant, who: Who, session: DB) -> KeyOut:
    target = accounts.get_project(session, who, project, needs=Role.ADMIN)
    key = accounts.get_key_for_admin(session, who, access_id)
    accounts.bind_role(session, key, target, body.role)
    return key_out(key, who)


@router.delete("/keys/{access_id}/roles/{project}")
def remove_role(access_id: str, project: str, who: Who, session: DB) -> KeyOut:
    target = accounts.get_project(session, who, project, needs=Role.ADMIN)
    key = accounts.get_key_for_admin(session, who, access_id)
    accounts.unbind_role(session, key, target)
    return key_out(key, who)
