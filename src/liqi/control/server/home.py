"""The server's files in LIQI_HOME: its folders, its lock and its record (``run/``).

Kept apart from the server itself so the CLI can read them without importing FastAPI.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from liqi.config import ServerSettings
from liqi.errors import ConfigError, ServerAlreadyRunningError

__all__ = ["ServerRecord", "home_lock", "lock_path", "prepare_home", "record_path"]


@dataclass(frozen=True)
class ServerRecord:
    """What ``run/server.json`` holds about the running server."""

    pid: int
    url: str
    host: str
    port: int
    version: str
    started_at: str

    @classmethod
    def read(cls, path: Path) -> ServerRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None


def lock_path(settings: ServerSettings) -> Path:
    return settings.run_dir / "server.lock"


def record_path(settings: ServerSettings) -> Path:
    return settings.run_dir / "server.json"


def prepare_home(settings: ServerSettings) -> None:
    """Create LIQI_HOME's folders, or explain why they cannot be created."""
    for folder in (settings.home, settings.run_dir, settings.log_dir, settings.store_dir):
        try:
            # The home holds the server key and the admin profile: owner only.
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"Cannot create {folder} ({exc.strerror}). Set LIQI_HOME to a writable folder."
            ) from None
    probe = settings.run_dir / ".write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"LIQI_HOME {settings.home} is not writable ({exc.strerror}). Fix its permissions "
            "or set LIQI_HOME to a writable folder."
        ) from None


@contextmanager
def home_lock(settings: ServerSettings) -> Iterator[IO[bytes]]:
    """Hold the home's lock; raises ServerAlreadyRunningError when another server holds it."""
    fh = open(lock_path(settings), "a+b")  # noqa: SIM115 - held for the server's lifetime
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            record = ServerRecord.read(record_path(settings))
            where = f" (pid {record.pid}, {record.url})" if record else ""
            raise ServerAlreadyRunningError(
                f"A liqi server is already running for LIQI_HOME={settings.home}{where}. "
                "Stop it with `liqi server stop` or use another LIQI_HOME."
            ) from None
        yield fh
    finally:
        fh.close()
