"""Database engine, sessions and migrations. SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from liqi.errors import ConfigError, DatabaseUnavailableError

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Pooled connections: the API's concurrency gate (control/server/app.py) keeps the requests in
# its routes below this, with room left for the background loops (reconciler, job runner,
# staging workers) and for authentication, which holds one only inside one thread hop.
POOL_SIZE = 10
POOL_OVERFLOW = 20


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def create_db_engine(url: str, *, busy_timeout_s: float = 30.0) -> Engine:
    """An engine for ``url``; raises ConfigError for a URL liqi cannot use. On SQLite a
    write waits up to ``busy_timeout_s`` for a lock another connection holds."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"LIQI_DATABASE_URL={url!r} is not a database URL. Use sqlite:///PATH or "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB."
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"Database {safe_url(url)!r} is not supported: liqi runs on sqlite or postgresql."
        )
    kwargs: dict[str, Any] = {"future": True, "pool_size": POOL_SIZE, "max_overflow": POOL_OVERFLOW}
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_s}
    else:
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise ConfigError(
            f"No driver for {safe_url(url)!r} ({exc}). For PostgreSQL install "
            "`pip install 'liqi[postgres]'` and use postgresql+psycopg://..."
        ) from None
    if backend == "sqlite":
        busy_ms = max(1, round(busy_timeout_s * 1000))

        def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        event.listen(engine, "connect", sqlite_pragmas)
    return engine


def unavailable(exc: OperationalError) -> DatabaseUnavailableError:
    """What a client is told when the database fails a request: it is locked by another
    process for longer than the busy timeout (SQLite), or it cannot be reached. The driver's
    own words (hosts, ports, SQL) stay in the server log."""
    reason = str(exc.orig or exc).lower()
    if "locked" in reason or "busy" in reason:
        return DatabaseUnavailableError(
            "The database is unavailable: another process has held it locked for longer than "
            "LIQI_DATABASE_BUSY_TIMEOUT_S. Retry shortly; if it lasts, "
            "find what holds the server's SQLite file."
        )
    return DatabaseUnavailableError(
        "The database is unavailable: the server cannot reach it or it broke off the "
        "connection. Retry shortly; if it lasts, check that the database of "
        "LIQI_DATABASE_URL is running (the server log has the driver's error)."
    )


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default). Raises
    DatabaseUnavailableError when the database cannot be reached."""
    url = engine.url.render_as_string(hide_password=True)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT 1"))
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailableError(
            f"Cannot connect to the database {url}: {reason}. Check LIQI_DATABASE_URL and "
            "that the database server is running."
        ) from None
    except SQLAlchemyError as exc:
        raise DatabaseUnavailableError(f"Cannot migrate the database {url}: {exc}") from None
    logger.info("database %s is at schema revision %s", url, revision)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
