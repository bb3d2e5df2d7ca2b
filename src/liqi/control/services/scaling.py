"""Autoscaling of services with an ``autoscaler``: the gateway counts requests, this turns
them into requests per second every ``interval_s`` and asks each service's
:class:`~liqi.core.autoscaling.Autoscaler` how many instances it wants."""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from liqi.control.db.tables import Service
from liqi.core.autoscaling import Autoscaler, ScalePolicy
from liqi.core.service_spec import ServiceSpec
from liqi.gateway.route_table import RouteTable

DEFAULT_QPS_PER_INSTANCE = 10.0
SpecOf = Callable[[Session, Service, int], ServiceSpec]


class ServiceScalers:
    """One Autoscaler per autoscaled service. Used by the reconciler's thread; ``wake`` may
    be called from the gateway's."""

    def __init__(
        self, routes: RouteTable, clock: Callable[[], float], *, interval_s: float = 1.0
    ) -> None:
        self.routes = routes
        self.clock = clock
        self.interval_s = interval_s
        self._scalers: dict[str, tuple[ScalePolicy, Autoscaler]] = {}
        self._qps: dict[str, float] = {}
        self._woken: set[str] = set()
        self._lock = threading.Lock()
        self._last = clock()

    def wake(self, name: str) -> None:
        with self._lock:
            self._woken.add(name)

    def qps(self, name: str) -> float:
        return self._qps.get(name, 0.0)

    def forget(self, name: str) -> None:
        self._scalers.pop(name, None)
        self._qps.pop(name, None)

    def decide(self, sessions: sessionmaker[Session], spec_of: SpecOf) -> dict[int, int]:
        """Service id -> the instances its autoscaler wants now (only services that have
        one, and only when it is time to look or a request woke a service up)."""
        now = self.clock()
        with self._lock:
            woken, self._woken = self._woken, set()
        measure = now - self._last >= self.interval_s
        if not measure and not woken:
            return {}
        if measure:
            elapsed = max(now - self._last, 1e-6)
            self._last = now
            counts = self.routes.take_request_counts()
            self._qps = {name: count / elapsed for name, count in counts.items()}
        wanted: dict[int, int] = {}
        with sessions() as session:
            rows = session.scalars(
                select(Service).where(Service.stopped.is_(False), Service.deleting.is_(False))
            )
            for service in rows:
                spec = spec_of(session, service, service.current_version)
                scaler = self._scaler(service, spec, now)
                if scaler is None:
                    continue
                if service.name in woken:
                    wanted[service.id] = scaler.wake(now)
                qps = self._qps.get(service.name, 0.0)
                if measure and (qps > 0 or self._serving(service.name, scaler)):
                    wanted[service.id] = scaler.observe(qps, now)
        return wanted

    def _serving(self, name: str, scaler: Autoscaler) -> bool:
        """False while instances were asked for and none is ready yet: a request woke the
        service and waits at the gateway, so an idle spell must not scale it back to zero."""
        route = self.routes.get(name)
        return scaler.instances == 0 or bool(route and route.upstreams)

    def _scaler(self, service: Service, spec: ServiceSpec, now: float) -> Autoscaler | None:
        auto = spec.autoscaler
        if auto is None:
            self._scalers.pop(service.name, None)
            return None
        policy = ScalePolicy(
            min_instances=auto.min,
            max_instances=auto.max,
            qps_per_instance=auto.qps or DEFAULT_QPS_PER_INSTANCE,
            **{
                name: value
                for name, value in (
                    ("up_cooldown_s", auto.up_cooldown_s),
                    ("down_cooldown_s", auto.down_cooldown_s),
                    ("idle_to_zero_s", auto.idle_to_zero_s),
                )
                if value is not None
            },
        )
        known = self._scalers.get(service.name)
        if known is None or known[0] != policy:
            known = (policy, Autoscaler(policy, instances=service.want, now=now))
            self._scalers[service.name] = known
        return known[1]
