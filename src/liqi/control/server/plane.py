"""The control plane's long-lived parts: database, secret box, authenticator, clock."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from liqi.backends.instance_groups import GroupedInstanceBackend
from liqi.backends.instances import InstanceBackend
from liqi.backends.jobs import Backend
from liqi.backends.local_instances import LocalInstanceBackend
from liqi.backends.local_jobs import LocalBackend
from liqi.backends.ray_capacity import Capacity
from liqi.backends.ray_instances import RayInstanceBackend
from liqi.backends.ray_jobs import RayJobBackend
from liqi.config import ServerSettings
from liqi.control.db.engine import create_db_engine, migrate, session_factory
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import utcnow
from liqi.control.fetch_policy import FetchPolicy
from liqi.control.identity.accounts import Principal
from liqi.control.identity.auth import Authenticator
from liqi.control.jobs.runner import JobRunner
from liqi.control.jobs.shipping import Shipper
from liqi.control.services.reconciler import Reconciler
from liqi.control.services.reconciler_config import ReconcilerConfig
from liqi.control.services.transfer import StagingLimits
from liqi.control.storage.buckets import StoreRegistry
from liqi.errors import PermissionDeniedError
from liqi.gateway.route_table import RouteTable
from liqi.resource_groups import GroupHealth, Placement, check_default
from liqi.sandbox import choose_isolation

logger = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    authenticator: Authenticator
    stores: StoreRegistry
    runner: JobRunner
    reconciler: Reconciler
    services_dir: Path
    clock: Callable[[], datetime] = utcnow
    routes: RouteTable = field(default_factory=RouteTable)
    fetches: FetchPolicy = field(default_factory=FetchPolicy)  # what specs may make it reach
    group_health: GroupHealth = field(default_factory=GroupHealth)  # asked before a job is taken
    capacity: Capacity = field(default_factory=Capacity)  # what a Ray group's nodes have
    isolation: str = "none"  # "sandbox": user code runs in liqi.sandbox
    url: str = ""  # where it listens, once it does (endpoints are printed with it)
    started_at: datetime = field(default_factory=utcnow)
    started_monotonic: float = field(default_factory=time.monotonic)
    pid: int = field(default_factory=os.getpid)

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)

    @property
    def placement(self) -> Placement:
        """Where this server lets workloads run (its resource groups)."""
        return placement_of(self.settings, self.isolation)

    def check_may_run_code(self, who: Principal, what: str) -> None:
        """Without a sandbox, user code would run as the server: only superusers may."""
        if self.isolation != "sandbox" and not who.is_superuser:
            raise PermissionDeniedError(
                f"This server runs user code without a sandbox (isolation {self.isolation!r}), "
                f"so only a superuser key may {what}. Ask the operator to start it with "
                "`liqi server start --isolation sandbox` (LIQI_ISOLATION=sandbox; bubblewrap "
                "and writable cgroups needed, see docs/security.md)."
            )

    @property
    def shipper(self) -> Shipper:
        """What serves the files of jobs that run on other nodes (a Ray group's)."""
        assert self.runner.shipper is not None
        return self.runner.shipper

    def close(self) -> None:
        self.engine.dispose()


def placement_of(settings: ServerSettings, isolation: str) -> Placement:
    return Placement(
        settings.resource_groups,
        settings.resource_group,
        isolation == "sandbox",
        settings.project_groups,
    )


def job_backends(settings: ServerSettings) -> dict[str, Backend]:
    """A job Backend per resource group: LocalBackend for ``local``, a RayJobBackend per Ray
    cluster (it connects on first use: an unreachable head fails its jobs, not the start).
    Raises ConfigError when the default group is not one of them."""
    check_default(settings.resource_group, settings.resource_groups)
    backends: dict[str, Backend] = {}
    for group in settings.resource_groups:
        if group.backend == "ray":
            backends[group.name] = RayJobBackend(group.address)
        else:
            backends[group.name] = LocalBackend()
    logger.info(
        "resource groups: %s (default %s)",
        ", ".join(g.describe() for g in settings.resource_groups),
        settings.resource_group,
    )
    return backends


def instance_backends(settings: ServerSettings, services_dir: Path) -> InstanceBackend:
    """The instances' backend per resource group: the local one (with its standby servers)
    for ``local``, a RayInstanceBackend per Ray cluster, behind one GroupedInstanceBackend."""
    backends: dict[str, InstanceBackend] = {}
    for group in settings.resource_groups:
        if group.backend == "ray":
            backends[group.name] = RayInstanceBackend(group.address)
        else:
            backends[group.name] = LocalInstanceBackend(
                standby_dir=services_dir / ".standby" if settings.standby else None,
                shared_readable=(str(settings.home / "cache" / "archives"),),
                log_limits=settings.log_limits,
            )
    return GroupedInstanceBackend(backends)


def open_plane(
    settings: ServerSettings,
    clock: Callable[[], datetime] = utcnow,
    instance_backend: InstanceBackend | None = None,
) -> ControlPlane:
    """Connect to the database, migrate it, and load the server key. Creates LIQI_HOME's
    folders. Raises ConfigError or DatabaseUnavailableError with the reason."""
    isolation, warning = choose_isolation(settings.isolation)
    if warning:
        logger.warning("isolation=%s: %s", isolation, warning)
    else:
        logger.info("isolation=%s: job tasks and instances run in liqi.sandbox", isolation)
    engine = create_db_engine(
        settings.effective_database_url, busy_timeout_s=settings.database_busy_timeout_s
    )
    try:
        migrate(engine)
        box = SecretBox.open(settings.secret_key_path)
    except BaseException:
        engine.dispose()
        raise
    sessions = session_factory(engine)
    stores = StoreRegistry(settings.store_dir, box)
    plane: ControlPlane
    runner = JobRunner(
        sessions,
        stores,
        job_backends(settings),
        settings.home / "jobs",
        sandbox=isolation == "sandbox",
        shipper=Shipper(sessions, box, stores, endpoint=lambda: plane.url, clock=clock),
    )
    routes = RouteTable()
    fetches = FetchPolicy.of(settings)
    services_dir = settings.home / "services"
    reconciler = Reconciler(
        sessions,
        box,
        stores,
        instance_backend or instance_backends(settings, services_dir),
        routes,
        ReconcilerConfig(
            home=settings.home,
            services_dir=services_dir,
            cache_dir=settings.home / "cache",
            staging=StagingLimits(
                timeout_s=settings.staging_timeout_s,
                max_bytes=settings.staging_max_mb * 2**20,
            ),
            fetches=fetches,
            sandbox=isolation == "sandbox",
            placement=placement_of(settings, isolation),
        ),
        endpoint=lambda: plane.url,
        clock=clock,
    )
    plane = ControlPlane(
        settings=settings,
        engine=engine,
        sessions=sessions,
        box=box,
        authenticator=Authenticator(sessions, box, clock),
        stores=stores,
        runner=runner,
        reconciler=reconciler,
        services_dir=services_dir,
        routes=routes,
        clock=clock,
        fetches=fetches,
        isolation=isolation,
    )
    return plane
