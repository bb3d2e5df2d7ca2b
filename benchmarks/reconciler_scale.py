"""The reconciler at scale: S services x I instances on a fake instance backend and a manual
clock, over a real control-plane database (the real migrations, the bootstrap superuser, the
catalog's own create and modify).

Run:
    PYTHONPATH=src:. .venv/bin/python benchmarks/reconciler_scale.py \
        --services 100 --instances 10 --db both --out benchmarks/RESULTS.md

Phases, each tick measured alone (wall time with perf_counter, SQL statements with the
engine's ``before_cursor_execute`` event): **create** (tick until every service is RUNNING),
**steady** (ticks with nothing to do), **rollout** (a new version of every service, then
tick until every instance runs it and every service is RUNNING again), **steady after**.
Between ticks the clock moves ``--tick-s`` and the stager's workers finish what they were
given (as the loop's wall clock would let them); a started instance is READY
``--ready-after-s`` simulated seconds later. Memory is the process RSS (psutil) at the end of
each phase and the peak RSS. Prints a Markdown section; ``--out`` appends it to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from cryptography.fernet import Fernet
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import Session, sessionmaker

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fakes import FakeInstanceBackend, ManualClock  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

from liqi.backends.instances import (  # noqa: E402
    InstanceHandle,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
)
from liqi.control.db.engine import create_db_engine, migrate, session_factory  # noqa: E402
from liqi.control.db.secretbox import SecretBox  # noqa: E402
from liqi.control.db.tables import Service, ServiceInstance  # noqa: E402
from liqi.control.identity import accounts  # noqa: E402
from liqi.control.identity.accounts import Principal  # noqa: E402
from liqi.control.identity.bootstrap import ensure_bootstrapped  # noqa: E402
from liqi.control.services import catalog  # noqa: E402
from liqi.control.services.reconciler import Reconciler  # noqa: E402
from liqi.control.services.reconciler_config import ReconcilerConfig  # noqa: E402
from liqi.control.storage.buckets import StoreRegistry  # noqa: E402
from liqi.gateway.route_table import RouteTable  # noqa: E402

MAX_TICKS = 5000


@dataclass
class DelayedBackend(FakeInstanceBackend):
    """The fake backend, with instances READY ``ready_after_s`` on the clock after start."""

    clock: ManualClock = field(default_factory=ManualClock)
    ready_after_s: float = 2.0
    _born: dict[str, datetime] = field(default_factory=dict)

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        handle = super().start(spec)
        self._born[handle.ref] = self.clock()
        return handle

    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        found = self.instances.get(handle.ref)
        born = self._born.get(handle.ref, self.clock())
        due = (self.clock() - born).total_seconds() >= self.ready_after_s
        if found is not None and found.phase is InstancePhase.STARTING and due:
            found.phase = InstancePhase.READY
        return super().status(handle, spec)


class QueryCounter:
    """SQL statements sent through the engine (from any thread)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        with self._lock:
            self.count += 1


@dataclass
class Phase:
    name: str
    tick_ms: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    simulated_s: float = 0.0
    wall_s: float = 0.0
    rss_mb: float = 0.0

    def row(self) -> str:
        ms = sorted(self.tick_ms)
        qs = sorted(self.queries)
        return (
            f"| {self.name} | {len(ms)} | {self.simulated_s:.1f} | {self.wall_s:.1f} | "
            f"{_pct(ms, 50):.1f} | {_pct(ms, 99):.1f} | {ms[-1]:.1f} | "
            f"{_pct(qs, 50):.0f} | {qs[-1]} | {self.rss_mb:.0f} |"
        )


def _pct(values: list[Any], p: int) -> float:
    """The p-th percentile (nearest rank) of sorted values."""
    index = max(0, min(len(values) - 1, round(p / 100 * len(values) + 0.5) - 1))
    return float(values[index])


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Simulation:
    def __init__(self, url: str, home: Path, *, tick_s: float, ready_after_s: float) -> None:
        self.engine = create_db_engine(url)
        migrate(self.engine)
        self.sessions: sessionmaker[Session] = session_factory(self.engine)
        self.box = SecretBox(Fernet.generate_key())
        boot = ensure_bootstrapped(self.sessions, self.box)
        with self.sessions() as session:
            key = accounts.find_active_key(session, boot.access_id)
            assert key is not None
            self.admin: Principal = accounts.load_principal(session, key)
        self.stores = StoreRegistry(home / "store", self.box)
        self.clock = ManualClock(datetime(2026, 1, 1, tzinfo=timezone.utc))
        self.backend = DelayedBackend(clock=self.clock, ready_after_s=ready_after_s)
        self.routes = RouteTable()
        self.model_dir = home / "model"
        self.model_dir.mkdir()
        (self.model_dir / "saved_model.pb").write_bytes(b"fake")
        self.tick_s = tick_s
        self.reconciler = Reconciler(
            self.sessions,
            self.box,
            self.stores,
            self.backend,
            self.routes,
            ReconcilerConfig(
                home=home, services_dir=home / "services", cache_dir=home / "cache", tick_s=tick_s
            ),
            endpoint=lambda: "http://127.0.0.1:1",
            clock=self.clock,
        )
        self.counter = QueryCounter(self.engine)

    def close(self) -> None:
        self.reconciler.stager.close()
        self.engine.dispose()

    def create(self, services: int, instances: int) -> None:
        for i in range(services):
            document = {
                "name": f"svc_{i:04d}",
                "model_path": str(self.model_dir),
                "processor": "tensorflow_cpu_1.15",
                "metadata": {"instance": instances},
            }
            with self.sessions.begin() as session:
                catalog.create(
                    session, self.admin, document, project="default", box=self.box,
                    stores=self.stores,
                )  # fmt: skip

    def modify_all(self, instances: int) -> None:
        with self.sessions() as session:
            names = list(session.scalars(select(Service.name).order_by(Service.id)))
        for name in names:
            change = {"metadata": {"instance": instances, "rpc": {"max_queue_size": 8}}}
            with self.sessions.begin() as session:
                catalog.modify(
                    session, self.admin, name, change, replace=False, box=self.box,
                    stores=self.stores,
                )  # fmt: skip

    def converged(self) -> bool:
        """Every service RUNNING, every instance READY on its service's current version."""
        with self.sessions() as session:
            busy = session.scalar(
                select(func.count()).select_from(Service).where(Service.state != "RUNNING")
            )
            stale = session.scalar(
                select(func.count())
                .select_from(ServiceInstance)
                .join(Service, Service.id == ServiceInstance.service_id)
                .where(
                    (ServiceInstance.state != "READY")
                    | (ServiceInstance.version != Service.current_version)
                )
            )
        return busy == 0 and stale == 0

    def tick(self, phase: Phase) -> None:
        before = self.counter.count
        start = time.perf_counter()
        self.reconciler.tick()
        phase.tick_ms.append((time.perf_counter() - start) * 1000)
        phase.queries.append(self.counter.count - before)
        self.reconciler.stager.wait(30.0)
        self.clock.advance(self.tick_s)
        phase.simulated_s += self.tick_s

    def until_converged(self, name: str) -> Phase:
        phase = Phase(name)
        start = time.perf_counter()
        while True:
            self.tick(phase)
            if self.converged():
                break
            if len(phase.tick_ms) >= MAX_TICKS:
                raise RuntimeError(f"{name}: not converged after {MAX_TICKS} ticks")
        phase.wall_s = time.perf_counter() - start
        phase.rss_mb = _rss_mb()
        return phase

    def steady(self, name: str, ticks: int) -> Phase:
        phase = Phase(name)
        start = time.perf_counter()
        for _ in range(ticks):
            self.tick(phase)
        phase.wall_s = time.perf_counter() - start
        phase.rss_mb = _rss_mb()
        return phase


@contextlib.contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{home / 'liqi.db'}"
        return
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster.create_database()
    finally:
        cluster.stop()


def run(kind: str, args: argparse.Namespace) -> tuple[list[Phase], dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        home = Path(tmp)
        rss_start = _rss_mb()
        sim = Simulation(url, home, tick_s=args.tick_s, ready_after_s=args.ready_after_s)
        try:
            start = time.perf_counter()
            sim.create(args.services, args.instances)
            create_s = time.perf_counter() - start
            phases = [sim.until_converged("create -> all RUNNING")]
            phases.append(sim.steady("steady (nothing to do)", args.steady_ticks))
            sim.modify_all(args.instances)
            phases.append(sim.until_converged("rolling update of every service"))
            phases.append(sim.steady("steady after the update", args.steady_ticks))
            extra = {
                "catalog_create_s": create_s,
                "rss_start_mb": rss_start,
                "rss_peak_mb": _peak_mb(),
                "instances_started": float(len(sim.backend.started)),
            }
        finally:
            sim.close()
    return phases, extra


def report(
    kind: str, args: argparse.Namespace, phases: list[Phase], extra: dict[str, float]
) -> str:
    load = ", ".join(f"{x:.1f}" for x in psutil.getloadavg())
    lines = [
        f"## Reconciler at scale (`benchmarks/reconciler_scale.py --db {kind}`), "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.services} services x {args.instances} instances on {kind}; tick "
        f"{args.tick_s} s simulated, instances READY {args.ready_after_s} s after start; "
        f"rolling strategy max_surge 1, max_unavailable 0. {psutil.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load} at the end. "
        f"{extra['instances_started']:.0f} instances started; catalog.create of every service "
        f"{extra['catalog_create_s']:.1f} s; RSS {extra['rss_start_mb']:.0f} MB before, peak "
        f"{extra['rss_peak_mb']:.0f} MB.",
        "",
        "| phase | ticks | simulated s | wall s | tick p50 ms | p99 ms | max ms "
        "| queries/tick p50 | max | RSS MB after |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(phase.row() for phase in phases),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--instances", type=int, default=10, help="instances per service")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--tick-s", type=float, default=0.2, help="simulated seconds a tick")
    parser.add_argument("--ready-after-s", type=float, default=2.0)
    parser.add_argument("--steady-ticks", type=int, default=50)
    parser.add_argument("--out", type=Path, help="append the Markdown section to this file")
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    for kind in kinds:
        phases, extra = run(kind, args)
        text = report(kind, args, phases, extra)
        print(text, flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write("\n" + text)


if __name__ == "__main__":
    main()
