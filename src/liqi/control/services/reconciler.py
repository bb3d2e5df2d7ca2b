"""The Reconciler: one loop that drives every service's instances towards its desired state.

Each tick, for each service: ask the InstanceBackend how its instances stand (ready, crashed,
out of memory), restart crashed ones after a backoff, follow :func:`plan_rollout` (start new
instances, drain old ones: out of the gateway's routes first, stopped once they have no
request in flight), publish the ready instances to the gateway's RouteTable, and write the
service's state and reason (a steady service, ``steady.py``: its route only). State lives in
the database, instances are found from their handles: a restarted loop re-adopts them.

A tick transfers no file (a Ray group's backend only asks its dashboard): a new instance is
STAGING while the :class:`~liqi.control.services.stager.Stager`'s workers fetch what it needs
(a model archive, a processor, a warm-up file); a later tick starts it, or counts a failed
start (``START_ATTEMPTS`` in a row: the service is FAILED with the reason). Deleting or
stopping a service removes every instance whatever its state. Times stored come from the
injected wall ``clock``, every wait from ``monotonic`` (a wall-clock step shortens none).
The loop never dies on an exception: it logs it, records it, and goes on.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from liqi.backends.instances import InstanceBackend, InstanceHandle, InstancePhase, InstanceSpec
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import Service, ServiceInstance, utcnow
from liqi.control.identity import workload_keys
from liqi.control.services import catalog, staging, steady
from liqi.control.services.reconciler_config import ReconcilerConfig
from liqi.control.services.scaling import ServiceScalers
from liqi.control.services.stager import Stager, StagingOutcome
from liqi.control.services.staging import StagingOrder
from liqi.control.services.steady import NOT_SERVING, progress, route_of, spec_of
from liqi.control.storage.buckets import StoreRegistry
from liqi.control.ticker import Ticker
from liqi.core.service_spec import ServiceSpec
from liqi.core.services import (
    InstanceState,
    InstanceView,
    ServiceState,
    plan_rollout,
    restart_backoff_s,
    service_state,
)
from liqi.errors import LiqiError
from liqi.gateway.route_table import RouteTable

log = logging.getLogger(__name__)

START_ATTEMPTS = 3  # a new version whose instances fail this often in a row: FAILED

StageFunction = Callable[[StagingOrder, threading.Event], InstanceSpec]


class Reconciler(Ticker):
    thread_name = "liqi-reconciler"

    def __init__(
        self,
        sessions: sessionmaker[Session],
        box: SecretBox,
        stores: StoreRegistry,
        backend: InstanceBackend,
        routes: RouteTable,
        config: ReconcilerConfig,
        *,
        endpoint: Callable[[], str],
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        stage: StageFunction | None = None,
    ) -> None:
        super().__init__(config.tick_s)
        self.sessions = sessions
        self.box = box
        self.stores = stores
        self.backend = backend
        self.routes = routes
        self.config = config
        self.endpoint = endpoint
        self.clock = clock
        self.monotonic = monotonic
        self.scalers = ServiceScalers(routes, monotonic)
        self.stager: Stager[StagingOrder] = Stager(
            stage or (lambda order, cancelled: staging.stage(order, config.staging, cancelled)),
            clock=monotonic,
            timeout_s=config.staging.timeout_s,
            workers=config.staging_workers,
        )
        self._specs: dict[tuple[int, int], ServiceSpec] = {}
        self._changed: dict[str, float] = {}  # instance id -> its last change, on monotonic
        routes.on_wake = self._on_gateway_wake

    # -- the loop ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop; instances outlive it (the next start re-adopts them)."""
        self.config.services_dir.mkdir(parents=True, exist_ok=True)
        super().start()

    def stop(self) -> None:
        super().stop()
        self.stager.close()
        self.backend.close()

    def _on_gateway_wake(self, name: str) -> None:
        self.scalers.wake(name)
        self.wake()

    def announce(self, name: str) -> None:
        """Publish a new service's route before its first tick: the gateway holds, not 404s."""
        with self.sessions() as session:
            service = session.scalar(select(Service).where(Service.name == name))
            if service is not None and self.routes.get(name) is None:
                self._publish(session, service, [], ServiceState(service.state), add=True)

    def tick(self) -> None:
        wanted = self.scalers.decide(self.sessions, self._spec)
        busy: list[int] = []
        with self.sessions() as session:
            services = list(session.scalars(select(Service).order_by(Service.id)))
            rows = catalog.instances_by_service(session)
            for service in services:
                mine = rows.get(service.id, [])
                if not self._publish_if_steady(session, service, mine, wanted.get(service.id)):
                    busy.append(service.id)
        for service_id in busy:
            try:
                self.reconcile(service_id, wanted.get(service_id))
            except Exception as exc:
                log.exception("service_id=%s reconcile failed", service_id)
                self._note_error(service_id, exc)

    def _note_error(self, service_id: int, exc: Exception) -> None:
        message = (
            f"cannot reconcile now: {exc.message}"  # e.g. a Ray head that does not answer
            if isinstance(exc, LiqiError)
            else f"internal error while reconciling: {type(exc).__name__}: {exc}"
        )
        try:
            with self.sessions.begin() as session:
                service = session.get(Service, service_id)
                if service is not None and service.reason != message:
                    service.reason = message
                    catalog.add_event(session, service_id, message, "error")
        except Exception:
            log.exception("service_id=%s could not record the error", service_id)

    def _spec(self, session: Session, service: Service, version: int) -> ServiceSpec:
        key = (service.id, version)
        if key not in self._specs:
            self._specs[key] = catalog.spec_of(session, service, version)
        return self._specs[key]

    def _publish_if_steady(
        self, session: Session, service: Service, rows: list[ServiceInstance], scaled: int | None
    ) -> bool:
        """Publish a steady service's route; False when it needs a reconcile (or failed)."""
        try:
            if not steady.is_steady(service, rows, scaled):
                return False
            for row in rows:
                spec = spec_of(row)
                seen = None if spec is None else self.backend.status(self._handle(row), spec)
                if seen is None or seen.phase is not InstancePhase.READY or seen.url != row.url:
                    return False
            self._publish(session, service, rows, ServiceState(service.state))
        except Exception:
            return False
        return True

    # -- one service ------------------------------------------------------------------------

    def reconcile(self, service_id: int, autoscaled: int | None = None) -> None:
        with self.sessions.begin() as session:
            service = session.get(Service, service_id)
            if service is None:
                return
            if autoscaled is not None and autoscaled != service.want and not service.stopped:
                catalog.add_event(
                    session,
                    service.id,
                    f"autoscaler: {service.want} -> {autoscaled} instance(s) "
                    f"({self.scalers.qps(service.name):.1f} requests/s)",
                )
                service.want = autoscaled
            rows = catalog.instances_of(session, service)
            for row in rows:
                self._observe(session, service, row)
            session.flush()
            rows = [r for r in rows if inspect(r).persistent]  # read once: removals only
            if service.deleting:
                for row in rows:
                    self._drain(session, row)
                session.flush()
                if not catalog.instances_of(session, service):
                    self._forget(session, service)
                    return
            elif service.stopped:
                for row in rows:
                    self._drain(session, row)
            else:
                self._roll(session, service, rows)
            self._settle(session, service, rows)

    def _observe(self, session: Session, service: Service, row: ServiceInstance) -> None:
        """Bring one instance row up to date with what the backend (or the stager) sees."""
        state = InstanceState(row.state)
        if state is InstanceState.STAGING:
            self._check_staging(session, service, row)
            return
        if state is InstanceState.CRASHED:
            self._maybe_restart(session, service, row)
            return
        spec = spec_of(row)
        if spec is None:  # no process can be found from this record: count it as crashed
            if state is InstanceState.STOPPING:
                self._remove(session, row)
                return
            self._crashed(session, service, row, "its record has no instance spec", "")
            return
        now = self.clock()
        if state is InstanceState.DRAINING:
            drained = self._waited_s(row) >= self.config.drain_timeout_s
            if self.routes.outstanding(row.id) == 0 or drained:
                self.backend.stop(self._handle(row), spec, grace_s=self.config.stop_grace_s)
                self._set(row, InstanceState.STOPPING)
            return
        status = self.backend.status(self._handle(row), spec)
        if status.phase is InstancePhase.EXITED:
            if state is InstanceState.STOPPING:
                self._remove(session, row)
                catalog.add_event(session, service.id, f"instance {row.id} stopped")
                return
            log.warning("service=%s instance %s crashed: %s", service.name, row.id, status.reason)
            self._crashed(session, service, row, f"{status.reason or 'exited'}", "crashed")
            return
        if status.url and status.url != row.url:
            row.url = status.url
        if state is InstanceState.STARTING and status.phase is InstancePhase.READY:
            row.ready_at = now
            row.crashes = 0
            row.reason = ""
            self._set(row, InstanceState.READY)
            took = (now - (row.started_at or row.created_at)).total_seconds()
            catalog.add_event(
                session, service.id, f"instance {row.id} ready at {row.url} in {took:.1f}s"
            )

    def _check_staging(self, session: Session, service: Service, row: ServiceInstance) -> None:
        outcome = self.stager.poll(row.id)
        if outcome is None:
            if not self.stager.knows(row.id):  # e.g. the control plane restarted meanwhile
                self._submit(session, service, row)
            return
        self._staged(session, service, row, outcome)

    def _staged(
        self, session: Session, service: Service, row: ServiceInstance, outcome: StagingOutcome
    ) -> None:
        if outcome.spec is None:
            log.warning(
                "service=%s instance %s could not be staged: %s",
                service.name,
                row.id,
                outcome.error,
            )
            self._crashed(session, service, row, f"could not stage: {outcome.error}", "")
            return
        row.spec_json = outcome.spec.redacted().to_json()
        self._launch(session, service, row, outcome.spec)

    def _launch(
        self, session: Session, service: Service, row: ServiceInstance, spec: InstanceSpec
    ) -> bool:
        """Start the instance's process; False (and the failure counted) when it cannot."""
        try:
            handle = self.backend.start(spec)
        except (LiqiError, OSError) as exc:
            message = exc.message if isinstance(exc, LiqiError) else str(exc)
            self._crashed(session, service, row, f"could not start: {message}", "")
            return False
        row.handle = handle.ref
        row.backend = handle.backend
        row.started_at = self.clock()
        row.url = ""
        self._set(row, InstanceState.STARTING)
        return True

    def _crashed(
        self, session: Session, service: Service, row: ServiceInstance, reason: str, verb: str
    ) -> None:
        """Count a failed start or a crash: ``START_ATTEMPTS`` in a row, never ready: FAILED."""
        row.crashes += 1
        row.reason = reason
        self._set(row, InstanceState.CRASHED)
        text = f"instance {row.id} {verb}: {reason}" if verb else f"instance {row.id} {reason}"
        catalog.add_event(session, service.id, text, "error")
        if row.ready_at is None and row.crashes >= START_ATTEMPTS:
            catalog.fail_version(session, service, row)

    def _maybe_restart(self, session: Session, service: Service, row: ServiceInstance) -> None:
        if service.failed or service.stopped or service.deleting:
            return
        if row.version != service.current_version:
            return  # the rollout drops it
        if self._waited_s(row) < restart_backoff_s(row.crashes):
            return
        spec = spec_of(row)
        if spec is None:  # staging failed last time: stage again
            self._set(row, InstanceState.STAGING)
            row.restarts += 1
            self._submit(session, service, row)
            return
        credentials = self._credentials(session, service, row.id, row.version)
        full = staging.with_secrets(spec, catalog.token_of(service, self.box), credentials)
        if self._launch(session, service, row, full):
            row.restarts += 1
            catalog.add_event(
                session, service.id, f"instance {row.id} restarted (restart {row.restarts})"
            )

    def _credentials(
        self, session: Session, service: Service, instance_id: str, version: int
    ) -> staging.Credentials | None:
        return staging.workload_credentials(
            session,
            service,
            self.box,
            self.endpoint(),
            instance_id=instance_id,
            spec=self._spec(session, service, version),
            now=self.clock(),
        )

    def _roll(self, session: Session, service: Service, rows: list[ServiceInstance]) -> None:
        spec = self._spec(session, service, service.current_version)
        views = [InstanceView(r.id, r.version, InstanceState(r.state)) for r in rows]
        if service.failed:
            # Keep what serves; drop what can never serve.
            for row in rows:
                if row.version != service.current_version and row.state in NOT_SERVING:
                    self._drain(session, row)
            return
        plan = plan_rollout(
            service.current_version,
            service.want,
            views,
            max_surge=spec.rolling.max_surge,
            max_unavailable=spec.rolling.max_unavailable,
        )
        by_id = {r.id: r for r in rows}
        for instance_id in plan.drain:
            self._drain(session, by_id[instance_id])
        for _ in range(plan.start):
            rows.append(self._start_new(session, service))

    def _drain(self, session: Session, row: ServiceInstance) -> None:
        """Take the instance out of service, whatever its state: staging is cancelled, a
        crashed or unreadable record is removed, a process is drained then stopped."""
        state = InstanceState(row.state)
        if state is InstanceState.READY:
            self._set(row, InstanceState.DRAINING)  # out of the routes at this tick's end
        elif state is InstanceState.STARTING:
            spec = spec_of(row)
            if spec is None:
                self._remove(session, row)
                return
            self.backend.stop(self._handle(row), spec, grace_s=self.config.stop_grace_s)
            self._set(row, InstanceState.STOPPING)
        elif state is InstanceState.STAGING:
            self.stager.cancel(row.id)
            self._remove(session, row)
        elif state is InstanceState.CRASHED:
            self._remove(session, row)

    def _start_new(self, session: Session, service: Service) -> ServiceInstance:
        version = service.current_version
        instance_id = f"{service.name}-v{version}-{secrets.token_hex(3)}"
        now = self.clock()
        row = ServiceInstance(
            id=instance_id,
            service_id=service.id,
            version=version,
            state=InstanceState.STAGING.value,
            spec_json="",
            created_at=now,
            started_at=now,
            changed_at=now,
        )
        session.add(row)
        catalog.add_event(
            session, service.id, f"instance {instance_id} staging (version {version})"
        )
        self._submit(session, service, row)
        return row

    def _submit(self, session: Session, service: Service, row: ServiceInstance) -> None:
        """Hand the instance to the stager (what its order needs from the database: read here)."""
        spec = self._spec(session, service, row.version)
        project = catalog.project_name(session, service)
        group = spec.resource_group or self.config.placement.default_of(project)
        sandboxed = self.config.sandbox and group == "local"  # Ray: the cluster's user
        try:
            order = StagingOrder(
                instance_id=row.id,
                instance_dir=self.config.services_dir / service.name / row.id,
                cache_dir=self.config.cache_dir,
                home=self.config.home,
                spec=spec,
                token=catalog.token_of(service, self.box),
                credentials=self._credentials(session, service, row.id, row.version),
                stores=staging.stores_for(session, spec, self.stores),
                policy=self.config.fetches,
                trusted=staging.written_by_superuser(session, service, row.version),
                sandbox_project=str(service.project_id) if sandboxed else None,
                group=group,
            )
        except (LiqiError, OSError) as exc:
            message = exc.message if isinstance(exc, LiqiError) else str(exc)
            self._crashed(session, service, row, f"could not stage: {message}", "")
            return
        self.stager.submit(row.id, order)

    # -- what the service shows -----------------------------------------------------------

    def _settle(self, session: Session, service: Service, rows: list[ServiceInstance]) -> None:
        session.flush()
        rows = [r for r in rows if inspect(r).persistent]  # those read, those started
        views = [InstanceView(r.id, r.version, InstanceState(r.state)) for r in rows]
        state = service_state(
            deleting=service.deleting,
            stopped=service.stopped,
            failed=service.failed,
            ever_running=service.ever_running,
            version=service.current_version,
            want=service.want,
            instances=views,
        )
        reason = service.reason if state is ServiceState.FAILED else progress(rows, service)
        if state is ServiceState.RUNNING:
            service.ever_running = True
        catalog.set_state(session, service, state.value)
        if not service.failed:
            service.reason = reason
        self._publish(session, service, rows, state)

    def _publish(
        self,
        session: Session,
        service: Service,
        rows: list[ServiceInstance],
        state: ServiceState,
        *,
        add: bool = False,
    ) -> None:
        spec = self._spec(session, service, service.current_version)
        route = route_of(service, rows, state, spec, catalog.token_of(service, self.box))
        (self.routes.add if add else self.routes.set)(route)

    def _forget(self, session: Session, service: Service) -> None:
        name = service.name
        self.routes.remove(name)
        self.scalers.forget(name)
        self._specs = {k: v for k, v in self._specs.items() if k[0] != service.id}
        session.delete(service)
        log.info("service=%s deleted", name)

    # -- helpers ----------------------------------------------------------------------------

    def _remove(self, session: Session, row: ServiceInstance) -> None:
        """The instance is gone: its record, and its workload key with it."""
        workload_keys.revoke(session, row.id, self.clock())
        self._changed.pop(row.id, None)
        session.delete(row)

    @staticmethod
    def _handle(row: ServiceInstance) -> InstanceHandle:
        return InstanceHandle(row.backend, row.handle)

    def _set(self, row: ServiceInstance, state: InstanceState) -> None:
        row.state = state.value
        row.changed_at = self.clock()
        self._changed[row.id] = self.monotonic()

    def _waited_s(self, row: ServiceInstance) -> float:
        """Seconds since the instance's last change (a re-adopted one: since ``changed_at``)."""
        now = self.monotonic()
        since = self._changed.get(row.id)
        if since is None:
            stored = (self.clock() - row.changed_at).total_seconds()
            since = self._changed[row.id] = now - max(0.0, stored)  # never below zero
        return now - since
