"""The control plane's long-lived parts: database, secret box, authenticator, clock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from liqi.backends.local import LocalBackend
from liqi.config import ServerSettings
from liqi.control.auth import Authenticator
from liqi.control.buckets import StoreRegistry
from liqi.control.db import create_db_engine, migrate, session_factory
from liqi.control.job_runner import JobRunner
from liqi.control.models import utcnow
from liqi.control.secretbox import SecretBox


@dataclass
class ControlPlane:
    settings: ServerSettings
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    authenticator: Authenticator
    stores: StoreRegistry
    runner: JobRunner
    clock: Callable[[], datetime] = utcnow
    started_at: datetime = field(default_factory=utcnow)
    started_monotonic: float = field(default_factory=time.monotonic)
    pid: int = field(default_factory=os.getpid)

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_monotonic, 3)

    def close(self) -> None:
        self.engine.dispose()


def open_plane(settings: ServerSettings, clock: Callable[[], datetime] = utcnow) -> ControlPlane:
    """Connect to the database, migrate it, and load the server key. Creates LIQI_HOME's
    folders. Raises ConfigError or DatabaseUnavailableError with the reason."""
    engine = create_db_engine(settings.effective_database_url)
    try:
        migrate(engine)
        box = SecretBox.open(settings.secret_key_path)
    except BaseException:
        engine.dispose()
        raise
    sessions = session_factory(engine)
    stores = StoreRegistry(settings.store_dir, box)
    runner = JobRunner(sessions, stores, LocalBackend(), settings.home / "jobs")
    return ControlPlane(
        settings=settings,
        engine=engine,
        sessions=sessions,
        box=box,
        authenticator=Authenticator(sessions, box, clock),
        stores=stores,
        runner=runner,
        clock=clock,
    )
