"""`liqi server start|stop|status`: the control plane as a background process."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from liqi.config import ServerSettings
from liqi.control.server.home import ServerRecord, lock_path, prepare_home, record_path
from liqi.errors import ServerStartError, ServerUnavailableError
from liqi.logs.reading import log_end, read_log

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.1
_REASON_BYTES = 1024 * 1024  # failure_reason reads at most the last MiB


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    home: Path
    record: ServerRecord | None = None
    uptime_s: float | None = None
    stale_cleaned: bool = False
    healthy: bool = False

    def as_dict(self) -> dict[str, object]:
        rec = self.record
        return {
            "running": self.running,
            "healthy": self.healthy,
            "home": str(self.home),
            "pid": rec.pid if rec else None,
            "url": rec.url if rec else None,
            "version": rec.version if rec else None,
            "started_at": rec.started_at if rec else None,
            "uptime_s": self.uptime_s,
            "stale_pid_file_removed": self.stale_cleaned,
        }


def is_locked(settings: ServerSettings) -> bool:
    """True when a server process holds this home's lock."""
    path = lock_path(settings)
    if not path.exists():
        return False
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return False


def health(url: str, timeout_s: float = 2.0) -> dict[str, object] | None:
    try:
        answer = httpx.get(f"{url}/healthz", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    body = answer.json()
    return body if isinstance(body, dict) else None


def server_status(settings: ServerSettings) -> ServerStatus:
    """Running or stopped; a pid file no live server holds is removed (and reported)."""
    path = record_path(settings)
    record = ServerRecord.read(path)
    if not is_locked(settings):
        stale = path.exists()
        if stale:
            path.unlink(missing_ok=True)
        return ServerStatus(running=False, home=settings.home, stale_cleaned=stale)
    if record is None:
        # Locked but not yet listening: a server is starting.
        return ServerStatus(running=True, home=settings.home)
    answer = health(record.url)
    uptime = answer.get("uptime_s") if answer else None
    return ServerStatus(
        running=True,
        home=settings.home,
        record=record,
        uptime_s=float(uptime) if isinstance(uptime, (int, float)) else None,
        healthy=answer is not None,
    )


def log_file(settings: ServerSettings) -> Path:
    return settings.log_dir / "server.log"


def start_server(settings: ServerSettings, timeout_s: float = START_TIMEOUT_S) -> ServerStatus:
    """Start ``liqi server run`` detached; return once it answers its health check.

    Returns the status of the server already running for this home, if there is one (check
    ``status.record.pid``), instead of starting a second one.

    Raises:
        ServerStartError: the process exited or did not become healthy; the message holds
            the reason from the log.
    """
    current = server_status(settings)
    if current.running:
        if current.record is None and _wait_for_record(settings) is not None:
            return server_status(settings)
        return current
    prepare_home(settings)
    log_path = log_file(settings)
    offset = log_end(log_path)
    cmd = [
        sys.executable, "-m", "liqi", "--home", str(settings.home), "server", "run",
        "--host", settings.host, "--port", str(settings.port), "--log-file", str(log_path),
    ]  # fmt: skip
    env = dict(os.environ)
    env["LIQI_LOG_MAX_MB"] = str(settings.log_max_mb)
    env["LIQI_LOG_BACKUPS"] = str(settings.log_backups)
    if settings.database_url:
        env["LIQI_DATABASE_URL"] = settings.database_url
    if settings.cors_origins:
        env["LIQI_CORS_ORIGINS"] = ",".join(settings.cors_origins)
    if settings.isolation:
        env["LIQI_ISOLATION"] = settings.isolation
    with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise ServerStartError(
                f"The server exited with code {code} while starting: "
                f"{failure_reason(log_path, offset)} (log: {log_path})"
            )
        record = ServerRecord.read(record_path(settings))
        if record is not None and record.pid == proc.pid and health(record.url, timeout_s=1.0):
            return server_status(settings)
        time.sleep(POLL_INTERVAL_S)
    proc.terminate()
    raise ServerStartError(
        f"The server did not answer its health check within {timeout_s:.0f}s: "
        f"{failure_reason(log_path, offset)} (log: {log_path})"
    )


def failure_reason(log_path: Path, offset: int) -> str:
    """The most telling line the server logged since log offset ``offset``."""
    try:
        start = max(offset, log_end(log_path) - _REASON_BYTES)
        text = read_log(log_path, start, _REASON_BYTES).data.decode(errors="replace")
    except OSError:
        return "no log"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith("Error:"):
            return line.removeprefix("Error:").strip()
    return lines[-1] if lines else "no output"


def stop_server(settings: ServerSettings, timeout_s: float = STOP_TIMEOUT_S) -> ServerStatus | None:
    """Stop the server gracefully (SIGTERM, then SIGKILL after ``timeout_s``).

    Returns the status it had, or None when no server was running.
    """
    current = server_status(settings)
    if not current.running:
        return None
    record = current.record or _wait_for_record(settings)
    if record is None:
        raise ServerUnavailableError(
            f"A server holds {lock_path(settings)} but wrote no pid file; cannot stop it safely."
        )
    _signal(record.pid, signal.SIGTERM)
    if not _wait_unlocked(settings, timeout_s):
        _signal(record.pid, signal.SIGKILL)
        _wait_unlocked(settings, 10.0)
        record_path(settings).unlink(missing_ok=True)
    return current


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_unlocked(settings: ServerSettings, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_locked(settings):
            return True
        time.sleep(POLL_INTERVAL_S)
    return False


def _wait_for_record(settings: ServerSettings, timeout_s: float = 10.0) -> ServerRecord | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        record = ServerRecord.read(record_path(settings))
        if record is not None:
            return record
        time.sleep(POLL_INTERVAL_S)
    return None
