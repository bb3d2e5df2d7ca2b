"""Services: create (every reference checked before anything is written), modify, roll back,
scale, stop, start, delete, and the lookups behind `desc`, `list`, `versions` and `events`.

These functions change the desired state only; the Reconciler (``control/services/reconciler.py``)
starts and stops instances to match it.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import (
    Project,
    Service,
    ServiceEvent,
    ServiceInstance,
    ServiceVersion,
    utcnow,
)
from liqi.control.fetch_policy import FetchPolicy
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.control.services import spec_checks
from liqi.control.services.spec_checks import MAX_INSTANCES
from liqi.control.storage.buckets import StoreRegistry
from liqi.core.names import Role
from liqi.core.service_spec import (
    ServiceSpec,
    merge_documents,
    parse_service_spec,
)
from liqi.core.services import InstanceState, ServiceState
from liqi.errors import (
    AlreadyExistsError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
)
from liqi.resource_groups import Placement

EVENTS_KEPT = 200


@dataclass(frozen=True)
class Change:
    service: Service
    warnings: tuple[str, ...] = ()


def stored_document(document: dict[str, object]) -> str:
    """A version's document as stored: without its ``token``, which is kept encrypted on the
    service (``token_ciphertext``), never in clear."""
    return json.dumps({k: v for k, v in document.items() if k != "token"})


def new_token() -> str:
    """A token like EAS's: base64 of random bytes."""
    return base64.b64encode(secrets.token_bytes(30)).decode()


# -- reading ----------------------------------------------------------------------------------


def find(session: Session, name: str) -> Service | None:
    return session.scalars(select(Service).where(Service.name == name)).first()


def get_service(
    session: Session, who: Principal, name: str, *, needs: Role = Role.MEMBER
) -> Service:
    """The service ``name`` as ``who`` may see it; NotFoundError otherwise (the two cases are
    not told apart)."""
    service = find(session, name)
    role = who.role_in(service.project_id) if service else None
    if service is None or role is None:
        raise NotFoundError(
            f"Service {name!r} does not exist (or your access key {who.access_id} has no role in "
            "its project). List services with `liqi eas list`."
        )
    if not role.allows(needs):
        raise PermissionDeniedError(
            f"Access key {who.access_id} is a {role.value} of the project of service {name!r}; "
            f"this needs the {needs.value} role."
        )
    return service


def list_services(session: Session, who: Principal, project: str | None = None) -> list[Service]:
    stmt = select(Service).order_by(Service.name)
    if project is not None:
        stmt = stmt.where(Service.project_id == accounts.get_project(session, who, project).id)
    elif not who.is_superuser:
        stmt = stmt.where(Service.project_id.in_(list(who.roles)))
    return list(session.scalars(stmt))


def version_row(session: Session, service: Service, version: int) -> ServiceVersion:
    row = session.scalars(
        select(ServiceVersion).where(
            ServiceVersion.service_id == service.id, ServiceVersion.version == version
        )
    ).first()
    if row is None:
        raise NotFoundError(
            f"Service {service.name!r} has no version {version}. Versions: "
            f"{', '.join(str(v.version) for v in list_versions(session, service))}."
        )
    return row


def list_versions(session: Session, service: Service) -> list[ServiceVersion]:
    stmt = (
        select(ServiceVersion)
        .where(ServiceVersion.service_id == service.id)
        .order_by(ServiceVersion.version)
    )
    return list(session.scalars(stmt))


def spec_of(session: Session, service: Service, version: int | None = None) -> ServiceSpec:
    row = version_row(session, service, version or service.current_version)
    return parse_service_spec(json.loads(row.document_json)).spec


def instances_of(session: Session, service: Service) -> list[ServiceInstance]:
    stmt = (
        select(ServiceInstance)
        .where(ServiceInstance.service_id == service.id)
        .order_by(ServiceInstance.created_at, ServiceInstance.id)
    )
    return list(session.scalars(stmt))


def instances_by_service(session: Session) -> dict[int, list[ServiceInstance]]:
    """Every instance record, by service id, in one query (ordered as ``instances_of``)."""
    stmt = select(ServiceInstance).order_by(ServiceInstance.created_at, ServiceInstance.id)
    found: dict[int, list[ServiceInstance]] = {}
    for row in session.scalars(stmt):
        found.setdefault(row.service_id, []).append(row)
    return found


def events_of(session: Session, service: Service, limit: int = 50) -> list[ServiceEvent]:
    stmt = (
        select(ServiceEvent)
        .where(ServiceEvent.service_id == service.id)
        .order_by(ServiceEvent.id.desc())
        .limit(limit)
    )
    return list(reversed(list(session.scalars(stmt))))


def token_of(service: Service, box: SecretBox) -> str | None:
    return None if service.token_ciphertext is None else box.decrypt(service.token_ciphertext)


def project_name(session: Session, service: Service) -> str:
    project = session.get(Project, service.project_id)
    return project.name if project else "?"


def add_event(session: Session, service_id: int, message: str, level: str = "info") -> None:
    session.add(ServiceEvent(service_id=service_id, message=message, level=level, at=utcnow()))
    # Keep the newest events only.
    oldest_kept = session.scalars(
        select(ServiceEvent.id)
        .where(ServiceEvent.service_id == service_id)
        .order_by(ServiceEvent.id.desc())
        .offset(EVENTS_KEPT)
        .limit(1)
    ).first()
    if oldest_kept is not None:
        session.execute(
            delete(ServiceEvent).where(
                ServiceEvent.service_id == service_id, ServiceEvent.id <= oldest_kept
            )
        )


# -- checking a spec ----------------------------------------------------------------------------


def create(
    session: Session,
    who: Principal,
    document: dict[str, object],
    *,
    project: str,
    box: SecretBox,
    stores: StoreRegistry,
    fetches: FetchPolicy | None = None,
    placement: Placement | None = None,
    gate: spec_checks.GroupGate | None = None,
) -> Change:
    """A new service at version 1 (state CREATING). Nothing is written when a check fails."""
    parsed = parse_service_spec(document)
    spec = parsed.spec
    owner = accounts.get_project(session, who, project)
    if find(session, spec.name) is not None:
        raise AlreadyExistsError(
            f"Service {spec.name!r} already exists. Change it with `liqi eas modify "
            f"{spec.name} -s <json>`, or delete it first with `liqi eas delete {spec.name}`."
        )
    spec_checks.check_spec(session, who, spec, stores, owner.name, fetches, placement, gate)
    token = spec.token or (new_token() if spec.generate_token else None)
    now = utcnow()
    service = Service(
        name=spec.name,
        project_id=owner.id,
        current_version=1,
        latest_version=1,
        want=_initial_instances(spec),
        state=ServiceState.CREATING.value,
        reason="",
        token_ciphertext=None if token is None else box.encrypt(token),
        created_by=who.access_id,
        created_at=now,
        updated_at=now,
    )
    session.add(service)
    session.flush()
    session.add(
        ServiceVersion(
            service_id=service.id,
            version=1,
            document_json=stored_document(spec.document),
            created_by=who.access_id,
            created_at=now,
        )
    )
    add_event(session, service.id, f"created version 1 by {who.access_id}")
    for warning in parsed.warnings:
        add_event(session, service.id, warning, "warning")
    return Change(service, parsed.warnings)


def _initial_instances(spec: ServiceSpec) -> int:
    if spec.autoscaler is None:
        return spec.instance
    return min(max(spec.instance, spec.autoscaler.min), spec.autoscaler.max)


def modify(
    session: Session,
    who: Principal,
    name: str,
    patch: dict[str, object],
    *,
    replace: bool,
    box: SecretBox,
    stores: StoreRegistry,
    fetches: FetchPolicy | None = None,
    placement: Placement | None = None,
    gate: spec_checks.GroupGate | None = None,
) -> Change:
    """A new version from ``patch`` merged into the current document (or replacing it); the
    reconciler rolls the instances over to it. The name cannot change."""
    service = get_service(session, who, name)
    _check_changeable(service)
    current = json.loads(version_row(session, service, service.current_version).document_json)
    document = dict(patch) if replace else merge_documents(current, patch)
    renamed = document.get("name") or (document.get("metadata") or {}).get("name")  # type: ignore[union-attr]
    if renamed is None:
        document["name"] = service.name
    elif renamed != service.name:
        raise InvalidRequestError(
            f"A service cannot be renamed ({service.name!r} -> {renamed!r}): create a new one."
        )
    parsed = parse_service_spec(document)
    spec = parsed.spec
    spec_checks.check_spec(
        session, who, spec, stores, project_name(session, service), fetches, placement, gate
    )
    old = parse_service_spec(current).spec
    version = service.latest_version + 1
    session.add(
        ServiceVersion(
            service_id=service.id,
            version=version,
            document_json=stored_document(spec.document),
            created_by=who.access_id,
        )
    )
    service.latest_version = version
    service.current_version = version
    service.failed = False
    service.reason = ""
    set_state(session, service, _pending_state(service, ServiceState.UPDATING))
    if spec.instance != old.instance or spec.autoscaler != old.autoscaler:
        service.want = _initial_instances(spec)
    if spec.token != old.token or spec.generate_token != old.generate_token:
        token = spec.token or (
            (token_of(service, box) or new_token()) if spec.generate_token else None
        )
        service.token_ciphertext = None if token is None else box.encrypt(token)
    _touch(session, service, f"modified: version {version} by {who.access_id}")
    for warning in parsed.warnings:
        add_event(session, service.id, warning, "warning")
    return Change(service, parsed.warnings)


def rollback(session: Session, who: Principal, name: str, version: int) -> Service:
    service = get_service(session, who, name)
    _check_changeable(service)
    version_row(session, service, version)
    if version == service.current_version:
        raise ConflictError(f"Service {name!r} already runs version {version}.")
    spec = spec_of(session, service, version)
    service.current_version = version
    service.want = _initial_instances(spec)
    service.failed = False
    service.reason = ""
    set_state(session, service, _pending_state(service, ServiceState.UPDATING))
    _touch(session, service, f"switched to version {version} by {who.access_id}")
    return service


def scale(session: Session, who: Principal, name: str, instances: int) -> Service:
    if not 0 <= instances <= MAX_INSTANCES:
        raise InvalidRequestError(
            f"Instances={instances} is out of range: use 0 to {MAX_INSTANCES}."
        )
    service = get_service(session, who, name)
    _check_changeable(service)
    service.want = instances
    if not service.failed:
        service.reason = ""
    set_state(session, service, _pending_state(service, ServiceState.SCALING))
    _touch(session, service, f"scaled to {instances} instance(s) by {who.access_id}")
    return service


def stop(session: Session, who: Principal, name: str) -> Service:
    service = get_service(session, who, name)
    _check_changeable(service)
    service.stopped = True
    service.reason = ""
    set_state(session, service, ServiceState.STOPPING.value)
    _touch(session, service, f"stop requested by {who.access_id}")
    return service


def start(session: Session, who: Principal, name: str) -> Service:
    service = get_service(session, who, name)
    _check_changeable(service)
    if not service.stopped and not service.failed:
        raise ConflictError(
            f"Service {name!r} is not stopped (it is {service.state}); `liqi eas stop {name}` "
            "stops it."
        )
    service.stopped = False
    service.failed = False
    service.reason = ""
    set_state(session, service, _pending_state(service, ServiceState.SCALING))
    _touch(session, service, f"start requested by {who.access_id}")
    return service


def delete_service(session: Session, who: Principal, name: str) -> Service:
    service = get_service(session, who, name)
    service.deleting = True
    service.reason = ""
    set_state(session, service, ServiceState.DELETING.value)
    _touch(session, service, f"delete requested by {who.access_id}")
    return service


def fail_version(session: Session, service: Service, row: ServiceInstance) -> None:
    """The service is FAILED: ``row``'s version (the current one) could not start, again and
    again; the reason says so, and which older version keeps serving, if any."""
    if row.version != service.current_version or service.failed:
        return
    service.failed = True
    service.reason = f"version {row.version} failed to start {row.crashes} times: {row.reason}"
    old = [
        r
        for r in instances_of(session, service)
        if r.version != row.version and r.state == InstanceState.READY.value
    ]
    if old:
        service.reason += f" (version {old[0].version} keeps serving)"
    add_event(session, service.id, f"FAILED: {service.reason}", "error")


def set_state(session: Session, service: Service, state: str) -> None:
    """Change the state the service shows, with an event."""
    if service.state != state:
        add_event(session, service.id, f"state {service.state} -> {state}")
        service.state = state
        service.updated_at = utcnow()


def _pending_state(service: Service, state: ServiceState) -> str:
    """What a change shows until the reconciler's next look (a service that never ran is
    still being created)."""
    return (state if service.ever_running else ServiceState.CREATING).value


def _check_changeable(service: Service) -> None:
    if service.deleting:
        raise ConflictError(f"Service {service.name!r} is being deleted.")


def _touch(session: Session, service: Service, message: str) -> None:
    service.updated_at = utcnow()
    add_event(session, service.id, message)
