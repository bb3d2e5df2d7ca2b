"""A control-plane database for tests that drive the control plane's parts directly: SQLite
in a folder, its tables, the bootstrap superuser and a store registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from liqi.control.db.engine import create_db_engine, session_factory
from liqi.control.db.secretbox import SecretBox
from liqi.control.db.tables import Base
from liqi.control.identity import accounts
from liqi.control.identity.accounts import Principal
from liqi.control.identity.bootstrap import ensure_bootstrapped
from liqi.control.storage.buckets import StoreRegistry


@dataclass(frozen=True)
class ControlDb:
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    admin: Principal  # the bootstrap superuser
    stores: StoreRegistry  # objects under ``<home>/store``


def control_db(home: Path) -> ControlDb:
    """The database ``home/liqi.db``; dispose of ``engine`` when done."""
    engine = create_db_engine(f"sqlite:///{home / 'liqi.db'}")
    Base.metadata.create_all(engine)
    sessions = session_factory(engine)
    box = SecretBox(Fernet.generate_key())
    boot = ensure_bootstrapped(sessions, box)
    with sessions() as session:
        key = accounts.find_active_key(session, boot.access_id)
        assert key is not None
        admin = accounts.load_principal(session, key)
    return ControlDb(engine, sessions, box, admin, StoreRegistry(home / "store", box))
