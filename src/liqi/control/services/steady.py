"""What the reconciler reads about a service's instance records, without I/O: how far a
service has come (its reason), an instance's stored spec, whether a service is steady, and
the gateway's route to it.

A steady service needs nothing from a tick but its route published again: RUNNING with
exactly ``want`` READY instances of its current version (or STOPPED with none), its reason up
to date, and no autoscaler change. The reconciler reads every service and every instance
record in two queries per tick and writes (one transaction per service) only for the others;
the backend must still see each instance of a steady service ready at its URL.
"""

from __future__ import annotations

import functools
import logging

from liqi.backends.instances import InstanceSpec
from liqi.control.db.tables import Service, ServiceInstance
from liqi.core.service_spec import ServiceSpec
from liqi.core.services import InstanceState, ServiceState
from liqi.gateway.route_table import ServiceRoute, Upstream

log = logging.getLogger(__name__)

NOT_SERVING = (InstanceState.CRASHED.value, InstanceState.STAGING.value)


def is_steady(service: Service, rows: list[ServiceInstance], autoscaled: int | None) -> bool:
    """Whether the service's records need no write this tick (the backend not asked yet)."""
    if service.deleting or service.failed:
        return False
    if service.stopped:
        return not rows and service.state == ServiceState.STOPPED.value and not service.reason
    if autoscaled is not None and autoscaled != service.want:
        return False
    return (
        service.ever_running
        and service.state == ServiceState.RUNNING.value
        and len(rows) == service.want
        and all(
            r.state == InstanceState.READY.value and r.version == service.current_version
            for r in rows
        )
        and service.reason == progress(rows, service)
    )


def progress(rows: list[ServiceInstance], service: Service) -> str:
    """The reason a service shows while it is not FAILED: how far it has come."""
    if service.deleting or service.stopped:
        left = sum(r.state != InstanceState.CRASHED.value for r in rows)
        return f"{left} instance(s) stopping" if left else ""
    current = [r for r in rows if r.version == service.current_version]
    running = sum(r.state == InstanceState.READY.value for r in current)
    # crashed, or restarting since (an instance's reason is cleared once it is ready again)
    crashed = [r for r in current if r.state != InstanceState.READY.value and r.reason]
    text = f"Total: {service.want}, Pending: {len(current) - running}, Running: {running}"
    return text + (f"; last crash: {crashed[-1].reason}" if crashed else "")


def spec_of(row: ServiceInstance) -> InstanceSpec | None:
    """The instance's spec, or None when its record has none (staging never finished) or
    cannot be read."""
    if not row.spec_json or row.spec_json == "{}":
        return None
    spec = _parsed(row.spec_json)
    if spec is None:
        log.warning("instance %s has an unreadable spec: %.200s", row.id, row.spec_json)
    return spec


@functools.lru_cache(maxsize=8192)
def _parsed(spec_json: str) -> InstanceSpec | None:
    """Parsed once: every tick reads every instance's spec (the specs are frozen)."""
    try:
        return InstanceSpec.from_json(spec_json)
    except (ValueError, TypeError):
        return None


def route_of(
    service: Service,
    rows: list[ServiceInstance],
    state: ServiceState,
    spec: ServiceSpec,
    token: str | None,
) -> ServiceRoute:
    """The gateway's route to ``service``: its READY instances, token and state."""
    return ServiceRoute(
        name=service.name,
        token=token,
        upstreams=tuple(
            Upstream(r.id, r.url) for r in rows if r.state == InstanceState.READY.value and r.url
        ),
        state=state.value,
        reason=service.reason,
        scale_from_zero=spec.autoscaler is not None and spec.autoscaler.min == 0,
        idempotent=spec.idempotent,
    )
