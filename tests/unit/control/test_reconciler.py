"""The reconciler as a state machine: a fake instance backend, a manual clock and a real
SQLite database; each test runs in milliseconds. Live tests with real `liqi serve` processes
are in tests/services/."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from liqi.backends.instances import InstancePhase, InstanceSpec
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import (
    AccessKey,
    Project,
    Service,
    ServiceInstance,
    ServiceVersion,
)
from liqi.control.identity import workload_keys
from liqi.control.identity.accounts import Principal
from liqi.control.identity.workload_keys import WorkloadScope
from liqi.control.services import catalog, staging
from liqi.control.services.reconciler import START_ATTEMPTS, Reconciler
from liqi.control.services.reconciler_config import ReconcilerConfig
from liqi.control.services.staging import StagingOrder
from liqi.control.services.transfer import StagingLimits
from liqi.control.storage import buckets
from liqi.control.storage.buckets import ExternalStore, StoreRegistry
from liqi.errors import StoreError
from liqi.gateway.route_table import RouteTable
from tests.support.control_db import control_db
from tests.support.fakes import FakeInstanceBackend, ManualClock
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(30)

StageFn = Callable[[StagingOrder, threading.Event], InstanceSpec]


@dataclass
class World:
    sessions: sessionmaker[Session]
    box: SecretBox
    stores: StoreRegistry
    backend: FakeInstanceBackend
    routes: RouteTable
    clock: ManualClock
    reconciler: Reconciler
    admin: Principal
    model_dir: Path
    stage_with: list[StageFn]

    def step(self, times: int = 1) -> None:
        """One tick, then let staging finish, as the loop would between ticks."""
        for _ in range(times):
            self.reconciler.tick()
            self.reconciler.stager.wait(5.0)

    def create(self, name: str = "svc", instances: int = 2, **extra: object) -> None:
        document = {
            "name": name,
            "model_path": str(self.model_dir),
            "processor": "tensorflow_cpu_1.15",
            "metadata": {"instance": instances},
            **extra,
        }
        with self.sessions.begin() as session:
            catalog.create(
                session, self.admin, document, project="default", box=self.box, stores=self.stores
            )

    def service(self, name: str = "svc") -> Service | None:
        with self.sessions() as session:
            return catalog.find(session, name)

    def instances(self, name: str = "svc") -> list[ServiceInstance]:
        with self.sessions() as session:
            service = catalog.find(session, name)
            return [] if service is None else catalog.instances_of(session, service)

    def states(self, name: str = "svc") -> list[str]:
        return sorted(row.state for row in self.instances(name))

    def change(self, action: Callable[[Session, Principal], object]) -> None:
        with self.sessions.begin() as session:
            action(session, self.admin)

    def settle(
        self, done: Callable[[], bool], *, ready: bool = False, seconds: float = 60.0
    ) -> None:
        """Tick (moving the clock ``seconds`` each time, and making started instances ready
        when ``ready``) until ``done``; at most 20 ticks."""
        for _ in range(20):
            if done():
                return
            if ready:
                self.backend.ready_all()
            self.step()
            self.clock.advance(seconds)
        raise AssertionError("the reconciler did not get there in 20 ticks")

    def run_until_ready(self) -> None:
        self.step()  # staged
        self.step()  # started
        self.backend.ready_all()
        self.step()  # ready


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    db = control_db(tmp_path)
    sessions, box, admin, stores = db.sessions, db.box, db.admin, db.stores
    backend = FakeInstanceBackend()
    routes = RouteTable()
    clock = ManualClock()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    stage_with: list[StageFn] = []
    limits = StagingLimits(timeout_s=60.0)

    def stage(order: StagingOrder, cancelled: threading.Event) -> InstanceSpec:
        if stage_with:
            return stage_with[0](order, cancelled)
        return staging.stage(order, limits, cancelled)

    reconciler = Reconciler(
        sessions,
        box,
        stores,
        backend,
        routes,
        ReconcilerConfig(
            home=tmp_path,
            services_dir=tmp_path / "services",
            cache_dir=tmp_path / "cache",
            staging=limits,
        ),
        endpoint=lambda: "http://127.0.0.1:1",
        clock=clock,
        monotonic=clock.monotonic,
        stage=stage,
    )
    yield World(
        sessions, box, stores, backend, routes, clock, reconciler, admin, model_dir, stage_with
    )
    reconciler.stager.close()
    db.engine.dispose()


def test_create_stages_starts_and_routes_the_instances(world: World) -> None:
    world.create(instances=2)
    world.step()
    assert world.states() == ["STAGING", "STAGING"]
    world.step()
    assert world.states() == ["STARTING", "STARTING"]
    assert world.service().state == "CREATING"  # type: ignore[union-attr]
    world.backend.ready_all()
    world.step()
    assert world.states() == ["READY", "READY"]
    assert world.service().state == "RUNNING"  # type: ignore[union-attr]
    route = world.routes.get("svc")
    assert route is not None
    assert len(route.upstreams) == 2
    spec = world.backend.running()[0].spec
    assert spec.model_uri == str(world.model_dir)


def test_crash_restarts_after_backoff_then_fails_after_three_attempts(world: World) -> None:
    world.create(instances=1)
    world.step(2)
    [row] = world.instances()
    world.backend.crash(row.id)
    world.step()
    assert world.states() == ["CRASHED"]
    assert world.service().state == "CREATING"  # type: ignore[union-attr]
    world.step()  # within the backoff (1 s after the first crash): not restarted
    assert world.states() == ["CRASHED"]
    world.clock.advance(1.0)
    world.step()
    assert world.states() == ["STARTING"]
    world.backend.crash(row.id)
    world.step()
    world.clock.advance(2.0)  # backoff doubles
    world.step()
    assert world.states() == ["STARTING"]
    world.backend.crash(row.id, "out of memory (2100 MB > 2000 MB)")
    world.step()
    service = world.service()
    assert service is not None
    assert service.state == "FAILED"
    assert f"failed to start {START_ATTEMPTS} times" in service.reason
    assert "out of memory" in service.reason


def test_an_instance_that_was_ready_restarts_without_failing_the_service(world: World) -> None:
    world.create(instances=1)
    world.run_until_ready()
    [row] = world.instances()
    for _ in range(START_ATTEMPTS + 1):
        world.backend.crash(row.id)
        world.step()
        world.clock.advance(120.0)
        world.step()
    assert world.service().state != "FAILED"  # type: ignore[union-attr]
    assert world.states() == ["STARTING"]


def test_staging_failure_counts_as_a_failed_start(world: World) -> None:
    def unreachable(order: StagingOrder, cancelled: threading.Event) -> InstanceSpec:
        raise StoreError("Cannot download the model http://127.0.0.1:9/m.tar.gz: ConnectError")

    world.stage_with.append(unreachable)
    world.create(instances=1)
    world.settle(lambda: world.service().state == "FAILED")  # type: ignore[union-attr]
    service = world.service()
    assert service is not None
    assert service.state == "FAILED"
    assert "could not stage: Cannot download the model" in service.reason
    assert world.backend.started == []
    world.change(lambda s, who: catalog.delete_service(s, who, "svc"))
    world.step()
    assert world.service() is None
    assert world.routes.get("svc") is None


def test_staging_runs_off_the_tick_and_delete_cancels_it(world: World) -> None:
    release = threading.Event()
    seen: list[threading.Event] = []

    def slow(order: StagingOrder, cancelled: threading.Event) -> InstanceSpec:
        seen.append(cancelled)
        release.wait(10)
        raise StoreError("released")

    world.stage_with.append(slow)
    world.create(name="slow", instances=1)
    world.reconciler.tick()  # returns at once although staging blocks
    assert world.states("slow") == ["STAGING"]
    wait_until(lambda: seen, "the slow staging to start on a worker")
    world.stage_with.clear()
    world.create(name="fast", instances=1)

    def fast_started() -> bool:
        world.reconciler.tick()  # the clock stands still: no staging times out
        return world.states("fast") == ["STARTING"]

    wait_until(fast_started, "service 'fast' to be staged and started")
    assert world.states("slow") == ["STAGING"]  # still blocked: 'fast' was not held up by it
    world.change(lambda s, who: catalog.delete_service(s, who, "slow"))
    world.reconciler.tick()
    assert world.service("slow") is None
    assert seen
    assert seen[0].is_set()
    release.set()


def test_staging_timeout_on_the_clock(world: World) -> None:
    release = threading.Event()
    world.stage_with.append(lambda order, cancelled: (release.wait(10), None)[1])  # type: ignore[arg-type,return-value]
    world.create(instances=1)
    world.reconciler.tick()
    world.clock.advance(61.0)
    world.reconciler.tick()
    [row] = world.instances()
    assert row.state == "CRASHED"
    assert "staging took longer than 60 s" in row.reason
    release.set()


def test_start_errors_count_towards_failed(world: World) -> None:
    world.backend.fail_start = START_ATTEMPTS
    world.create(instances=1)
    world.settle(lambda: world.service().state == "FAILED")  # type: ignore[union-attr]
    service = world.service()
    assert service is not None
    assert service.state == "FAILED"
    assert "could not start: cannot start" in service.reason


def test_delete_completes_whatever_the_instances_records_hold(world: World) -> None:
    world.create(instances=2)
    world.run_until_ready()
    with world.sessions.begin() as session:
        rows = session.query(ServiceInstance).all()
        rows[0].spec_json = "{}"  # what a failed staging left before
        rows[1].spec_json = '{"instance_id": "x", "unknown_field": 1}'
    world.change(lambda s, who: catalog.delete_service(s, who, "svc"))
    world.step(3)
    assert world.service() is None


def test_rolling_update_drains_old_instances_after_new_ones_are_ready(world: World) -> None:
    world.create(instances=2)
    world.run_until_ready()
    old = {row.id for row in world.instances()}
    world.change(
        lambda s, who: catalog.modify(
            s,
            who,
            "svc",
            {"metadata": {"instance": 2, "rpc": {"max_queue_size": 8}}},
            replace=False,
            box=world.box,
            stores=world.stores,
        )
    )
    world.step(2)
    rows = world.instances()
    assert {r.id for r in rows if r.version == 1} == old
    assert all(r.state == "READY" for r in rows if r.version == 1)  # still serving
    assert world.service().state == "UPDATING"  # type: ignore[union-attr]
    world.settle(lambda: {r.version for r in world.instances()} == {2}, ready=True)
    world.step()
    rows = world.instances()
    assert {r.version for r in rows} == {2}
    assert all(r.state == "READY" for r in rows)
    assert all(world.backend.of(i).stop_asked for i in old)
    assert world.service().state == "RUNNING"  # type: ignore[union-attr]


def test_draining_waits_for_requests_in_flight_up_to_the_timeout(world: World) -> None:
    world.create(instances=1)
    world.run_until_ready()
    [row] = world.instances()
    world.routes.begin(row.id)  # a request in flight
    world.change(lambda s, who: catalog.stop(s, who, "svc"))
    world.step(2)
    assert world.states() == ["DRAINING"]
    assert not world.backend.of(row.id).stop_asked
    world.clock.advance(31.0)  # past the drain timeout
    world.step(2)
    assert world.backend.of(row.id).stop_asked
    assert world.states() == []
    assert world.service().state == "STOPPED"  # type: ignore[union-attr]


def test_rollback_to_the_previous_version(world: World) -> None:
    world.create(instances=1)
    world.run_until_ready()
    world.change(
        lambda s, who: catalog.modify(
            s,
            who,
            "svc",
            {"metadata": {"rpc": {"max_queue_size": 8}}},
            replace=False,
            box=world.box,
            stores=world.stores,
        )
    )
    world.settle(lambda: {r.version for r in world.instances()} == {2}, ready=True)
    world.change(lambda s, who: catalog.rollback(s, who, "svc", 1))
    world.settle(lambda: world.service().state == "RUNNING", ready=True)  # type: ignore[union-attr]
    service = world.service()
    assert service is not None
    assert service.current_version == 1
    assert [r.version for r in world.instances()] == [1]
    assert service.state == "RUNNING"


def test_scale_to_zero_and_back(world: World) -> None:
    world.create(instances=2)
    world.run_until_ready()
    world.change(lambda s, who: catalog.scale(s, who, "svc", 0))
    world.step(3)
    assert world.instances() == []
    assert len(world.backend.running()) == 0
    service = world.service()
    assert service is not None
    assert service.state == "RUNNING"
    world.change(lambda s, who: catalog.scale(s, who, "svc", 1))
    world.run_until_ready()
    assert world.states() == ["READY"]
    assert world.backend.of(world.instances()[0].id).phase is InstancePhase.READY


def _oss_model(world: World) -> str:
    """A bucket of project default holding a model folder; its oss:// URI."""
    with world.sessions.begin() as session:
        project = session.query(Project).filter_by(name="default").one()
        bucket = buckets.create_bucket(
            session,
            world.box,
            name="models",
            project=project,
            backend="local",
            external=ExternalStore(),
            credentials=None,
        )
        world.stores.store_for(bucket).put("mnist/1/saved_model.pb", [b"pb"])
    return "oss://models/mnist/"


def test_stored_specs_hold_no_secret_and_restarts_get_them_back(world: World) -> None:
    world.create(instances=1, token="tok-secret-value", model_path=_oss_model(world))
    world.step(2)
    [row] = world.instances()
    assert "tok-secret-value" not in row.spec_json
    assert "LIQI_ACCESS_KEY" not in row.spec_json
    first = world.backend.of(row.id).spec
    assert first.token == "tok-secret-value"
    assert first.env["LIQI_ACCESS_KEY"]
    world.backend.crash(row.id)
    world.step()
    world.clock.advance(5.0)
    world.step()
    again = world.backend.of(row.id).spec
    assert again.token == "tok-secret-value"
    assert again.env["LIQI_ACCESS_KEY"] == first.env["LIQI_ACCESS_KEY"]
    with world.sessions() as session:
        version = session.query(ServiceVersion).one()
        assert "tok-secret-value" not in version.document_json


def test_instances_get_a_scoped_workload_key_revoked_when_they_go(world: World) -> None:
    world.create(instances=1, model_path=_oss_model(world))
    world.run_until_ready()
    [row] = world.instances()
    env = world.backend.of(row.id).spec.env
    with world.sessions() as session:
        key = session.query(AccessKey).filter_by(access_id=env["LIQI_ACCESS_ID"]).one()
        assert key.workload == row.id
        assert key.revoked_at is None
        assert key.expires_at is not None
        assert not key.is_superuser
        scope = WorkloadScope.from_json(key.scope_json or "{}")
        assert scope.prefixes == (("models", "mnist/"),)
        allowed = [
            ("GET", "/api/v1/buckets/models/objects", "prefix=mnist/"),
            ("GET", "/api/v1/buckets/models/objects/mnist/1/saved_model.pb", ""),
            ("HEAD", "/api/v1/buckets/models/stat/mnist/1/saved_model.pb", ""),
        ]
        refused = [
            ("GET", "/api/v1/buckets/models/objects", "prefix="),
            ("GET", "/api/v1/buckets/models/objects", "prefix=mnist-other/"),
            ("GET", "/api/v1/buckets/models/objects/other/secret.bin", ""),
            ("GET", "/api/v1/buckets/models/objects/mnist/../other/x", ""),
            ("PUT", "/api/v1/buckets/models/objects/mnist/1/x", ""),
            ("GET", "/api/v1/buckets/other/objects/mnist/1/saved_model.pb", ""),
            ("GET", "/api/v1/projects", ""),
            ("POST", "/api/v1/services", "project=default"),
        ]
        for method, path, query in allowed:
            assert workload_keys.allows(session, scope, method, path, query), path
        for method, path, query in refused:
            assert not workload_keys.allows(session, scope, method, path, query), path
    world.change(lambda s, who: catalog.scale(s, who, "svc", 0))
    world.step(3)
    with world.sessions() as session:
        key = session.query(AccessKey).filter_by(access_id=env["LIQI_ACCESS_ID"]).one()
        assert key.revoked_at is not None
