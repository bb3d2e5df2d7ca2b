"""A throwaway Ray head on this machine: ``ray start --head`` on free loopback ports, in a
temp dir and a session of its own, stopped by killing exactly its processes.

``ray stop`` is not used: it kills every Ray process on the machine (it matches process names,
not a cluster), so it would also stop another test worker's head or a developer's cluster.
Instead the head is started in a new session; every Ray daemon (GCS, raylet, dashboard, agents,
workers) stays in that session, so the head is stopped by signalling the processes of that
session, plus any process whose command line names the head's temp dir or GCS port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from liqi.asgi.listen import free_ports

START_TIMEOUT_S = 120.0


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    if found.exists():
        return str(found)
    on_path = shutil.which("ray")
    if on_path is None:
        raise RuntimeError("the `ray` command is not installed: pip install 'liqi[ray]'")
    return on_path


def _ray_start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``ray start ...`` in a session of its own (every daemon it starts stays in it), its
    output to ``log``."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    with open(log, "wb") as out:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


@dataclass
class RayHead:
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    client_port: int
    agent_port: int
    session_id: int = 0
    started_s: float = 0.0
    stopped_s: float = 0.0
    pids: list[int] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @classmethod
    def create(cls) -> RayHead:
        # Ray's unix sockets live under the temp dir: keep the path short (108 bytes max).
        temp = Path(tempfile.mkdtemp(prefix="liqi-ray-", dir="/tmp"))
        gcs, dashboard, client, agent = free_ports(4)
        return cls(temp, gcs, dashboard, client, agent)

    def start(self) -> None:
        begin = time.monotonic()
        command = [
            _ray_cli(), "start", "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={self.gcs_port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            # Both default to fixed ports (10001, 52365): two heads on a machine would clash.
            f"--ray-client-server-port={self.client_port}",
            f"--dashboard-agent-listen-port={self.agent_port}",
            "--num-cpus=8",
            "--object-store-memory=512000000",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
        ]  # fmt: skip
        log = self.temp_dir / "ray-start.log"
        proc = _ray_start(command, log)
        self.session_id = proc.pid
        try:
            code = proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"`ray start --head` took over {START_TIMEOUT_S:g} s") from None
        if code != 0:
            text = log.read_text(errors="replace")[-4000:]
            self.stop()
            raise RuntimeError(f"`ray start --head` exited with code {code}:\n{text}")
        self._wait_for_jobs_api(begin + START_TIMEOUT_S)
        self.pids = [p.pid for p in self.processes()]
        self.started_s = time.monotonic() - begin

    def _wait_for_jobs_api(self, deadline: float) -> None:
        last = ""
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{self.dashboard_url}/api/jobs/", timeout=5)
                if answer.status_code == 200:
                    return
                last = f"HTTP {answer.status_code}"
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"the Ray head's Jobs API never answered at {self.dashboard_url}: {last}"
        )

    def add_node(self, num_cpus: int) -> RayNode:
        """A second Ray node of this cluster on this machine, in a session of its own (so it
        can be lost alone); :meth:`stop` of the head stops it too (it names the GCS port)."""
        agent, manager = free_ports(2)
        command = [
            _ray_cli(), "start",
            f"--address={self.gcs_address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--dashboard-agent-listen-port={agent}",
            f"--node-manager-port={manager}",
            "--object-store-memory=100000000",
            "--disable-usage-stats",
        ]  # fmt: skip
        log = self.temp_dir / f"ray-node-{manager}.log"
        proc = _ray_start(command, log)
        code = proc.wait(timeout=START_TIMEOUT_S)
        node = RayNode(proc.pid, manager)
        if code != 0:
            node.kill()
            text = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"`ray start --address` exited with code {code}:\n{text}")
        return node

    def processes(self) -> list[psutil.Process]:
        """Every live process of this head."""
        marks = (str(self.temp_dir), f":{self.gcs_port}")
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                cmdline = proc.info["cmdline"] or []
                # In the session, and a Ray process (not one that reused the session's pid).
                mine = (
                    self.session_id
                    and os.getsid(proc.pid) == self.session_id
                    and any("ray" in arg for arg in cmdline)
                )
                if mine or any(m in arg for arg in cmdline for m in marks):
                    found[proc.pid] = proc
        for proc in list(found.values()):
            with contextlib.suppress(psutil.Error):
                for child in proc.children(recursive=True):
                    found[child.pid] = child
        found.pop(os.getpid(), None)
        return [p for p in found.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    def rss_mb(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total // (1024 * 1024)

    def stop(self) -> None:
        """SIGKILL this head's processes, as ``ray stop --force`` would (but only these): a
        throwaway head has nothing to save, and its GCS and raylet take seconds over SIGTERM."""
        begin = time.monotonic()
        for _attempt in range(3):  # a worker may be forked while we kill
            procs = self.processes()
            if not procs:
                break
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(procs, timeout=10)
        self.stopped_s = time.monotonic() - begin
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class RayNode:
    """A node :meth:`RayHead.add_node` started: its processes are those of its session."""

    session_id: int
    node_manager_port: int

    def processes(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                if os.getsid(proc.pid) == self.session_id and proc.pid != os.getpid():
                    found.append(proc)
        return found

    def kill(self) -> None:
        """SIGKILL every process of the node: the node is lost, as if its machine died."""
        for _attempt in range(3):
            procs = self.processes()
            if not procs:
                return
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            psutil.wait_procs(procs, timeout=10)


def ray_groups(head: RayHead) -> str:
    """LIQI_RESOURCE_GROUPS with the head as the group ``ray``."""
    return f"ray=ray:{head.dashboard_url}"
