"""A steady tick costs the same SQL whatever the number of services: the reconciler reads
every record in two queries and writes only for services that need it (the figures at 1,000
instances are in benchmarks/RESULTS.md, from benchmarks/reconciler_scale.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from liqi.control.db.tables import Service
from liqi.control.services import catalog
from liqi.control.services.reconciler import Reconciler
from liqi.control.services.reconciler_config import ReconcilerConfig
from liqi.gateway.route_table import RouteTable
from tests.support.control_db import control_db
from tests.support.fakes import FakeInstanceBackend, ManualClock

pytestmark = pytest.mark.timeout(60)


@dataclass
class Fleet:
    engine: Engine
    sessions: sessionmaker[Session]
    backend: FakeInstanceBackend
    routes: RouteTable
    clock: ManualClock
    reconciler: Reconciler

    def tick(self) -> int:
        """One tick (staging let finish after it); the SQL statements it sent."""
        seen: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        event.listen(self.engine, "before_cursor_execute", count)
        try:
            self.reconciler.tick()
        finally:
            event.remove(self.engine, "before_cursor_execute", count)
        self.reconciler.stager.wait(10.0)
        self.clock.advance(1.0)
        return len(seen)

    def states(self) -> set[str]:
        with self.sessions() as session:
            return {s.state for s in session.query(Service)}

    def running(self) -> None:
        for _ in range(10):
            self.backend.ready_all()
            self.tick()
            if self.states() == {"RUNNING"}:
                return
        raise AssertionError(f"services not RUNNING after 10 ticks: {self.states()}")


@contextmanager
def fleet(tmp_path: Path, services: int) -> Iterator[Fleet]:
    home = tmp_path / f"fleet{services}"
    (home / "model").mkdir(parents=True)
    db = control_db(home)
    engine, sessions, box, admin, stores = db.engine, db.sessions, db.box, db.admin, db.stores
    for i in range(services):
        document = {
            "name": f"svc_{i}",
            "model_path": str(home / "model"),
            "processor": "tensorflow_cpu_1.15",
            "metadata": {"instance": 2},
        }
        with sessions.begin() as session:
            catalog.create(session, admin, document, project="default", box=box, stores=stores)
    backend, routes, clock = FakeInstanceBackend(), RouteTable(), ManualClock()
    config = ReconcilerConfig(home=home, services_dir=home / "services", cache_dir=home / "cache")
    reconciler = Reconciler(
        sessions,
        box,
        stores,
        backend,
        routes,
        config,
        endpoint=lambda: "http://x",
        clock=clock,
        monotonic=clock.monotonic,
    )
    try:
        yield Fleet(engine, sessions, backend, routes, clock, reconciler)
    finally:
        reconciler.stager.close()
        engine.dispose()


def test_steady_ticks_cost_the_same_sql_for_10_and_40_services(tmp_path: Path) -> None:
    counts: dict[int, int] = {}
    for services in (10, 40):
        with fleet(tmp_path, services) as world:
            world.running()
            counts[services] = max(world.tick() for _ in range(3))
            route = world.routes.get(f"svc_{services - 1}")
            assert route is not None
            assert len(route.upstreams) == 2
            assert route.state == "RUNNING"
    assert counts[40] == counts[10], counts  # before: ~4 statements a service a tick
    assert counts[10] <= 5, counts


def test_a_steady_service_still_sees_a_crash_at_the_next_tick(tmp_path: Path) -> None:
    with fleet(tmp_path, 3) as world:
        world.running()
        world.tick()
        crashed = world.backend.running()[0].spec.instance_id
        world.backend.crash(crashed)
        world.tick()
        with world.sessions() as session:
            service = catalog.find(session, crashed.split("-v")[0])
            assert service is not None
            states = {r.id: r.state for r in catalog.instances_of(session, service)}
        assert states[crashed] == "CRASHED"
        assert service.state != "RUNNING"
        route = world.routes.get(service.name)
        assert route is not None
        assert crashed not in {u.instance_id for u in route.upstreams}
