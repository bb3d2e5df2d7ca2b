"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import json
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
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0007"
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


def test_0005_removes_secrets_stored_in_clear(tmp_path: Path, database_url: str | None) -> None:
    """Services created before 0005 kept the token in their documents and the token and the
    owner's key in their instances' specs: the migration scrubs both."""
    engine = create_db_engine(database_url or f"sqlite:///{tmp_path / 's.db'}")
    try:
        migrate(engine, "0004")
        document = {"name": "svc", "token": "tok-in-clear", "model_path": "/m"}
        spec = {"instance_id": "svc-v1-a", "token": "tok-in-clear",
                "env": {"LIQI_ACCESS_ID": "LQ1", "LIQI_ACCESS_KEY": "key-in-clear"}}  # fmt: skip
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO projects (id, name, description, created_at) "
                              "VALUES (1, 'p1', '', CURRENT_TIMESTAMP)"))  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO services (id, name, project_id, current_version, "
                    "latest_version, want, stopped, deleting, failed, ever_running, state, "
                    "reason, created_by, created_at, updated_at) VALUES (1, 'svc', 1, 1, 1, 1, "
                    "false, false, false, false, 'RUNNING', '', 'LQ1', CURRENT_TIMESTAMP, "
                    "CURRENT_TIMESTAMP)"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO service_versions (service_id, version, document_json, "
                    "created_by, created_at) VALUES (1, 1, :doc, 'LQ1', CURRENT_TIMESTAMP)"
                ),
                {"doc": json.dumps(document)},
            )
            conn.execute(
                text(
                    "INSERT INTO service_instances (id, service_id, version, state, backend, "
                    "handle, spec_json, url, crashes, restarts, reason, created_at, changed_at) "
                    "VALUES ('svc-v1-a', 1, 1, 'READY', 'local', '1', :spec, '', 0, 0, '', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"spec": json.dumps(spec)},
            )
        migrate(engine)
        with engine.connect() as conn:
            stored_doc = conn.execute(text("SELECT document_json FROM service_versions")).scalar()
            stored_spec = conn.execute(text("SELECT spec_json FROM service_instances")).scalar()
        assert "tok-in-clear" not in stored_doc
        assert json.loads(stored_doc)["model_path"] == "/m"
        assert "tok-in-clear" not in stored_spec
        assert "key-in-clear" not in stored_spec
        assert json.loads(stored_spec)["env"] == {"LIQI_ACCESS_ID": "LQ1"}
    finally:
        engine.dispose()
