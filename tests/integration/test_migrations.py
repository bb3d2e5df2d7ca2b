"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from liqi.control.db.engine import create_db_engine, migrate
from liqi.control.db.tables import Base


def test_migrated_schema_matches_models(tmp_path: Path, database_url: str | None) -> None:
    engine = create_db_engine(database_url or f"sqlite:///{tmp_path / 'm.db'}")
    try:
        migrate(engine)
        migrate(engine)  # idempotent
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            assert set(inspect(conn).get_table_names()) >= {
                "projects", "access_keys", "role_bindings", "server_state", "alembic_version",
                "services", "service_versions", "service_instances", "service_events",
            }  # fmt: skip
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
