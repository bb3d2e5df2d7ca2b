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


def create_db_engine(url: str) -> Engine:
    """An engine for ``url``; raises ConfigError for a URL liqi cannot use."""
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
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
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
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


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
