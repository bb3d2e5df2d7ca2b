"""Routes for services (EAS's CreateService, UpdateService, DescribeService...):
create, list, describe, modify, stop, start, scale, delete, token, versions, rollback,
events and instance logs. Bodies are the EAS service JSON as users write it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from liqi.control.api.deps import DB, PlaneDep, Who
from liqi.control.api.jobs import LOG_CHUNK_MAX, whole_characters
from liqi.control.db.tables import Service, ServiceEvent, ServiceInstance
from liqi.control.server.plane import ControlPlane
from liqi.control.services import catalog
from liqi.control.services.spec_checks import GroupGate
from liqi.core.names import Role
from liqi.core.service_spec import ServiceSpec
from liqi.errors import InvalidRequestError, NotFoundError
from liqi.logs.reading import read_log
from liqi.resource_groups import LOCAL, SERVICE_ELSEWHERE, ResourceGroup

router = APIRouter(prefix="/api/v1")


class InstanceOut(BaseModel):
    id: str
    version: int
    state: str
    url: str
    restarts: int
    reason: str
    started_at: datetime | None
    ready_at: datetime | None


class EventOut(BaseModel):
    at: datetime
    level: str
    message: str


class ServiceOut(BaseModel):
    name: str
    project: str
    state: str
    reason: str
    current_version: int
    latest_version: int
    instances_wanted: int
    instances_ready: int
    endpoint: str
    direct_endpoints: list[str]
    token_required: bool
    model_path: str | None
    processor: str | None
    cpu: float | None
    memory_mb: int | None
    autoscaler: dict[str, Any] | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    config: dict[str, Any]
    instances: list[InstanceOut] = []
    events: list[EventOut] = []
    warnings: list[str] = []
    token: str | None = None  # only in the answer to create, and from /token


class ScaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: StrictInt = Field(ge=0)


class VersionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    version: StrictInt = Field(ge=1, alias="Version")


class VersionOut(BaseModel):
    version: int
    current: bool
    created_by: str
    created_at: datetime
    config: dict[str, Any]


class TokenOut(BaseModel):
    service: str
    token_required: bool
    token: str | None


class LogChunk(BaseModel):
    instance: str
    data: str
    offset: int
    final: bool


def endpoint_of(plane: ControlPlane, name: str) -> str:
    return f"{plane.url}/api/predict/{name}"


def service_out(
    plane: ControlPlane, session: DB, service: Service, *, detail: bool = False
) -> ServiceOut:
    spec = catalog.spec_of(session, service)
    rows: list[ServiceInstance] = catalog.instances_of(session, service)
    ready = [r for r in rows if r.state == "READY" and r.url]
    events: list[ServiceEvent] = catalog.events_of(session, service) if detail else []
    autoscaler = spec.document.get("autoscaler")
    return ServiceOut(
        name=service.name,
        project=catalog.project_name(session, service),
        state=service.state,
        reason=service.reason,
        current_version=service.current_version,
        latest_version=service.latest_version,
        instances_wanted=service.want,
        instances_ready=sum(r.version == service.current_version for r in ready),
        endpoint=endpoint_of(plane, service.name),
        direct_endpoints=[f"{r.url}/api/predict/{service.name}" for r in ready],
        token_required=service.token_ciphertext is not None,
        model_path=spec.model_path,
        processor=spec.processor or ("python" if spec.processor_entry else None),
        cpu=spec.cpu,
        memory_mb=spec.memory_mb,
        autoscaler=autoscaler if isinstance(autoscaler, dict) else None,
        created_by=service.created_by,
        created_at=service.created_at,
        updated_at=service.updated_at,
        config=spec.document,
        instances=[
            InstanceOut(
                id=r.id,
                version=r.version,
                state=r.state,
                url=r.url,
                restarts=r.restarts,
                reason=r.reason,
                started_at=r.started_at,
                ready_at=r.ready_at,
            )
            for r in rows
        ]
        if detail
        else [],
        events=[EventOut(at=e.at, level=e.level, message=e.message) for e in events],
    )


def _changed(p: ControlPlane, session: DB, service: Service) -> ServiceOut:
    """The answer to a change: the service as it now stands; the reconciler acts on it."""
    session.flush()
    p.reconciler.wake()
    return service_out(p, session, service, detail=True)


# NOTE: the handlers are sync on purpose: FastAPI runs them on its thread pool, so database
# and store work never holds up the gateway, which shares the event loop.
Document = Annotated[dict[str, Any], Body(description="The EAS service JSON.")]


def _group_gate(p: ControlPlane) -> GroupGate:
    """What a service's group must offer before anything of it is written: a Ray head that
    answers now (else 503) and a node an instance fits on (else 400)."""

    def gate(group: ResourceGroup, spec: ServiceSpec) -> None:
        p.group_health.require(
            group, p.settings.resource_groups, work="services", elsewhere=SERVICE_ELSEWHERE
        )
        if group.backend != LOCAL:
            what = "Each instance (metadata.cpu, metadata.memory)"
            cpu = spec.cpu if spec.cpu is not None else 1.0
            p.capacity.require(group.address, group.describe(), what, cpu, spec.memory_mb)

    return gate


@router.post("/services", status_code=201)
def create_service(document: Document, p: PlaneDep, who: Who, project: str) -> ServiceOut:
    p.check_may_run_code(who, "deploy services")
    with p.sessions.begin() as session:
        change = catalog.create(
            session,
            who,
            document,
            project=project,
            box=p.box,
            stores=p.stores,
            fetches=p.fetches,
            placement=p.placement,
            gate=_group_gate(p),
        )
        session.flush()
        out = service_out(p, session, change.service, detail=True)
        out.warnings = list(change.warnings)
        out.token = catalog.token_of(change.service, p.box)
    p.reconciler.announce(out.name)
    p.reconciler.wake()
    return out


@router.get("/services")
def list_services(
    p: PlaneDep, who: Who, session: DB, project: str | None = None
) -> list[ServiceOut]:
    return [service_out(p, session, s) for s in catalog.list_services(session, who, project)]


@router.get("/services/{name}")
def describe_service(name: str, p: PlaneDep, who: Who, session: DB) -> ServiceOut:
    return service_out(p, session, catalog.get_service(session, who, name), detail=True)


@router.put("/services/{name}")
def modify_service(
    name: str, patch: Document, p: PlaneDep, who: Who, update_type: str = "merge"
) -> ServiceOut:
    p.check_may_run_code(who, "modify services")
    if update_type not in ("merge", "replace"):
        raise InvalidRequestError(
            f"update_type={update_type!r}: use 'merge' (the default) or 'replace'."
        )
    with p.sessions.begin() as session:
        change = catalog.modify(
            session,
            who,
            name,
            patch,
            replace=update_type == "replace",
            box=p.box,
            stores=p.stores,
            fetches=p.fetches,
            placement=p.placement,
            gate=_group_gate(p),
        )
        session.flush()
        out = service_out(p, session, change.service, detail=True)
        out.warnings = list(change.warnings)
    p.reconciler.wake()
    return out


@router.put("/services/{name}/version")
def switch_version(name: str, body: VersionIn, p: PlaneDep, who: Who, session: DB) -> ServiceOut:
    service = catalog.rollback(session, who, name, body.version)
    return _changed(p, session, service)


@router.get("/services/{name}/versions")
def list_versions(name: str, who: Who, session: DB) -> list[VersionOut]:
    service = catalog.get_service(session, who, name)
    return [
        VersionOut(
            version=v.version,
            current=v.version == service.current_version,
            created_by=v.created_by,
            created_at=v.created_at,
            config=json.loads(v.document_json),
        )
        for v in catalog.list_versions(session, service)
    ]


@router.put("/services/{name}/scale")
def scale_service(name: str, body: ScaleIn, p: PlaneDep, who: Who, session: DB) -> ServiceOut:
    service = catalog.scale(session, who, name, body.instances)
    return _changed(p, session, service)


@router.put("/services/{name}/stop")
def stop_service(name: str, p: PlaneDep, who: Who, session: DB) -> ServiceOut:
    service = catalog.stop(session, who, name)
    return _changed(p, session, service)


@router.put("/services/{name}/start")
def start_service(name: str, p: PlaneDep, who: Who, session: DB) -> ServiceOut:
    service = catalog.start(session, who, name)
    return _changed(p, session, service)


@router.delete("/services/{name}")
def delete_service(name: str, p: PlaneDep, who: Who, session: DB) -> ServiceOut:
    service = catalog.delete_service(session, who, name)
    return _changed(p, session, service)


@router.get("/services/{name}/token")
def service_token(name: str, p: PlaneDep, who: Who, session: DB) -> TokenOut:
    service = catalog.get_service(session, who, name, needs=Role.MEMBER)
    token = catalog.token_of(service, p.box)
    return TokenOut(service=service.name, token_required=token is not None, token=token)


@router.get("/services/{name}/events")
def service_events(name: str, who: Who, session: DB, limit: int = 100) -> list[EventOut]:
    if not 1 <= limit <= 1000:
        raise InvalidRequestError(f"limit={limit} is out of range: use 1 to 1000.")
    service = catalog.get_service(session, who, name)
    return [
        EventOut(at=e.at, level=e.level, message=e.message)
        for e in catalog.events_of(session, service, limit)
    ]


@router.get("/services/{name}/logs")
def service_logs(
    name: str,
    p: PlaneDep,
    who: Who,
    session: DB,
    instance: str | None = None,
    offset: int = 0,
) -> LogChunk:
    """A piece of one instance's log (default: the newest instance's)."""
    service = catalog.get_service(session, who, name)
    rows = catalog.instances_of(session, service)
    if instance is None:
        chosen = rows[-1].id if rows else _newest_dir(p, service.name)
    elif instance in {r.id for r in rows} or instance in _instance_dirs(p, service.name):
        # Looked up, never joined as given: a path would read another folder's instance.log.
        chosen = instance
    else:
        raise NotFoundError(
            f"Service {name!r} has no instance {instance!r}. Instances: "
            f"{', '.join(r.id for r in rows) or 'none'}."
        )
    if chosen is None:
        return LogChunk(instance="", data="", offset=0, final=True)
    # Offsets count every byte the log has had: a rotation does not move them.
    piece = read_log(p.services_dir / service.name / chosen / "instance.log", offset, LOG_CHUNK_MAX)
    data = whole_characters(piece.data)
    live = chosen in {r.id for r in rows if r.state in ("STARTING", "READY", "DRAINING")}
    return LogChunk(
        instance=chosen,
        data=data.decode("utf-8", errors="replace"),
        offset=piece.offset - (len(piece.data) - len(data)),
        final=not live and len(data) < LOG_CHUNK_MAX - 3,
    )


def _instance_dirs(p: ControlPlane, name: str) -> set[str]:
    """The names of the service's instance folders (an instance's log outlives its row)."""
    folder = p.services_dir / name
    return {d.name for d in folder.iterdir() if d.is_dir()} if folder.is_dir() else set()


def _newest_dir(p: ControlPlane, name: str) -> str | None:
    folder = p.services_dir / name
    if not folder.is_dir():
        return None
    dirs: list[Path] = sorted(
        (d for d in folder.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime
    )
    return dirs[-1].name if dirs else None
