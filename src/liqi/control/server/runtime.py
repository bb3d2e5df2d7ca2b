"""`liqi server run`: the control plane in the foreground, on uvicorn.

Owns LIQI_HOME while it runs: holds an exclusive lock on ``run/server.lock`` (so two servers
never share a home, and a pid file left by a crash is recognisably stale) and writes
``run/server.json`` (pid, URL, version) once it listens.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from types import FrameType

import uvicorn

from liqi._version import __version__
from liqi.asgi.header_timeout import DEFAULT_HEADER_TIMEOUT_S, header_timeout_protocol
from liqi.asgi.listen import bind_socket, url_for
from liqi.asgi.types import ASGIApp
from liqi.config import ServerSettings, write_private_file
from liqi.control.db.tables import utcnow
from liqi.control.identity.bootstrap import ensure_bootstrapped, write_admin_profile
from liqi.control.server.app import build_app
from liqi.control.server.home import ServerRecord, home_lock, prepare_home, record_path
from liqi.control.server.plane import ControlPlane, open_plane

logger = logging.getLogger(__name__)


def _exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@dataclass(frozen=True)
class Runtime:
    """A control plane ready to serve: its app, its listening socket and its URL."""

    app: ASGIApp
    sock: socket.socket
    url: str
    record: ServerRecord
    plane: ControlPlane


@contextmanager
def control_plane_runtime(
    settings: ServerSettings, clock: Callable[[], datetime] = utcnow
) -> Iterator[Runtime]:
    """Own LIQI_HOME, listen, migrate and bootstrap; undo it all on exit. ``clock`` is the
    wall clock (tests step it).

    Raises:
        ConfigError: LIQI_HOME or the bind address is unusable.
        ServerAlreadyRunningError: another server owns this home.
        PortInUseError: the port is taken.
        DatabaseUnavailableError: the database cannot be reached.
    """
    prepare_home(settings)
    with home_lock(settings):
        sock = bind_socket(settings.host, settings.port)
        plane = None
        record_file = record_path(settings)
        try:
            plane = open_plane(settings, clock)
            swept = plane.stores.sweep_temp_files()
            if swept:
                logger.info("removed %d temporary file(s) of uploads a stopped server left", swept)
            port = sock.getsockname()[1]
            url = url_for(settings.host, port)
            plane.url = url
            boot = ensure_bootstrapped(plane.sessions, plane.box)
            write_admin_profile(settings, plane.sessions, plane.box, boot.access_id, url)
            if boot.created:
                logger.info("first start: wrote the admin profile to %s", settings.profile_path)
            record = ServerRecord(
                pid=os.getpid(),
                url=url,
                host=settings.host,
                port=port,
                version=__version__,
                started_at=plane.started_at.isoformat(),
            )
            write_private_file(record_file, json.dumps(asdict(record)).encode())
            logger.info(
                "liqi %s control plane listening on %s (home %s)", __version__, url, settings.home
            )
            plane.runner.start()
            plane.reconciler.start()
            yield Runtime(app=build_app(plane), sock=sock, url=url, record=record, plane=plane)
        finally:
            if plane is not None:
                plane.reconciler.stop()
                plane.runner.stop()
            record_file.unlink(missing_ok=True)
            sock.close()
            if plane is not None:
                plane.close()
            logger.info("control plane stopped")


# An idle keep-alive connection is closed after this long (uvicorn's timeout_keep_alive).
KEEP_ALIVE_S = 5


def uvicorn_server(
    app: ASGIApp, *, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
) -> uvicorn.Server:
    """uvicorn with uvloop and httptools (the gateway's hot path). The lifespan runs so the
    gateway closes its connections to instances once the requests in flight are done. No
    proxy-headers rewrite: the gateway appends the peer's address to X-Forwarded-For."""
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=header_timeout_protocol(header_timeout_s),
        proxy_headers=False,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=KEEP_ALIVE_S,
        lifespan="on",
    )
    return uvicorn.Server(config)


def settle_heap() -> None:
    """Move everything built at start (imports, the app) out of the collector's sight: the
    gateway allocates per request, and each full collection would walk it all again."""
    gc.collect()
    gc.freeze()


def run_server(settings: ServerSettings) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests finish first. Blocks; main thread only."""
    # The database, logs and lock are the server's own: owner-only, like the key and profile.
    os.umask(0o077)
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        with control_plane_runtime(settings) as runtime:
            settle_heap()
            uvicorn_server(runtime.app).run(sockets=[runtime.sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
