"""A real control plane on uvicorn, in a thread, on port 0."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from liqi.asgi.header_timeout import DEFAULT_HEADER_TIMEOUT_S
from liqi.backends.instances import SANDBOX_DIR
from liqi.client import Client
from liqi.config import ProfileFile, ServerSettings
from liqi.control.db.tables import utcnow
from liqi.control.server.plane import ControlPlane
from liqi.control.server.runtime import control_plane_runtime, uvicorn_server
from liqi.resource_groups import check_default, parse_project_groups, parse_resource_groups


@dataclass
class LiveServer:
    settings: ServerSettings
    url: str
    plane: ControlPlane | None = None  # the server's own, for tests that reach into it

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def environ(self) -> dict[str, str]:
        """An environment whose profile is the server's admin profile."""
        return {"LIQI_HOME": str(self.home)}

    def admin_profile(self) -> ProfileFile:
        return ProfileFile.load(self.settings.profile_path)

    def admin(self) -> Client:
        return Client(environ=self.environ)

    def client(self, access_id: str, secret: str) -> Client:
        return Client(endpoint=self.url, access_id=access_id, access_key=secret, environ={})


def wait_healthy(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server at {url} not healthy after {timeout_s}s")
        time.sleep(0.05)


@contextmanager
def live_server(
    home: Path,
    database_url: str | None,
    *,
    cors_origins: tuple[str, ...] = (),
    allow_private_urls: tuple[str, ...] = ("*",),
    store_endpoints: tuple[str, ...] = (),
    local_model_roots: tuple[Path, ...] = (),
    body_timeout_s: float = 60.0,
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
    isolation: str | None = None,
    standby: bool = True,
    resource_groups: str = "",
    resource_group: str = "local",
    project_groups: str = "",
    database_busy_timeout_s: float = 30.0,
    clock: Callable[[], datetime] = utcnow,
) -> Iterator[LiveServer]:
    """A control plane for tests. Its model archives are served from 127.0.0.1, so private
    URLs are allowed unless ``allow_private_urls`` says otherwise (tests/security does).
    ``standby`` False: no standby model server, every instance starts cold.
    ``resource_groups``, ``resource_group`` and ``project_groups`` are
    LIQI_RESOURCE_GROUPS, LIQI_RESOURCE_GROUP and LIQI_PROJECT_RESOURCE_GROUPS.
    ``database_busy_timeout_s`` is LIQI_DATABASE_BUSY_TIMEOUT_S; ``clock`` is the server's wall
    clock (tests/reliability steps it)."""
    groups = parse_resource_groups(resource_groups)
    settings = ServerSettings(
        home=home,
        host="127.0.0.1",
        port=0,
        database_url=database_url,
        cors_origins=cors_origins,
        allow_private_urls=allow_private_urls,
        store_endpoints=store_endpoints,
        local_model_roots=local_model_roots,
        body_timeout_s=body_timeout_s,
        database_busy_timeout_s=database_busy_timeout_s,
        isolation=isolation,
        standby=standby,
        resource_groups=groups,
        resource_group=check_default(resource_group, groups),
        project_groups=parse_project_groups(project_groups, groups),
    )
    with control_plane_runtime(settings, clock) as runtime:
        server = uvicorn_server(runtime.app, header_timeout_s=header_timeout_s)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [runtime.sock]}, daemon=True
        )
        thread.start()
        try:
            wait_healthy(runtime.url)
            yield LiveServer(settings=settings, url=runtime.url, plane=runtime.plane)
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def kill_instances(home: Path) -> int:
    """SIGKILL the service instances and standby servers (``liqi serve`` processes working
    under ``home/services``, sandboxed or not) that a failed test left running; returns how
    many."""
    import psutil

    prefix = str(home / "services") + "/"
    killed = 0
    for process in psutil.process_iter():
        if (instance_folder(process.pid) or "").startswith(prefix):
            with contextlib.suppress(psutil.Error):
                process.kill()
                killed += 1
    return killed


def instance_folder(pid: int) -> str | None:
    """The folder on this machine that process ``pid`` works in: its working folder, or for a
    sandboxed instance (which works in /instance) the folder bound there, read from its
    mountinfo; None when it cannot be read."""
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None
    if cwd != SANDBOX_DIR:
        return cwd
    try:
        theirs = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
        ours = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    # fields: id, parent, major:minor, root (in its filesystem), mount point, ...
    bound = [f.split() for f in theirs if f.split()[4:5] == [SANDBOX_DIR]]
    if not bound:
        return None
    device, root = bound[-1][2], bound[-1][3]
    for fields in (line.split() for line in ours):
        if fields[2] == device and (root + "/").startswith(fields[3].rstrip("/") + "/"):
            return fields[4].rstrip("/") + root[len(fields[3].rstrip("/")) :]
    return None
