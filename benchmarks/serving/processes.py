"""Server subprocesses for the benchmark: start, await readiness with a deadline, sample
memory, and always stop them (by their own process group, which each is started in).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psutil


class ServerFailedError(RuntimeError):
    """A server exited, or did not answer its readiness check before the deadline."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One GET on loopback: (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the server and every process it started."""
        try:
            root = psutil.Process(self.process.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0
        total = 0
        for proc in procs:
            with suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@contextmanager
def running(
    name: str,
    command: Sequence[str],
    *,
    port: int,
    log_path: Path,
    ready_path: str = "/readyz",
    ready_timeout_s: float = 120.0,
    cwd: Path | None = None,
) -> Iterator[Server]:
    """Start `command`, wait until GET `ready_path` answers 200, yield, then stop it.

    `Server.ready_s` is the time from just before the process was started to the first 200.
    """
    with log_path.open("wb") as log:
        start = time.monotonic()
        process = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
        )
        server = Server(name=name, port=port, process=process, log_path=log_path)
        try:
            server.ready_s = _await_ready(server, ready_path, start, ready_timeout_s)
            yield server
        finally:
            stop(process)


def _await_ready(server: Server, path: str, start: float, timeout_s: float) -> float:
    deadline = start + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerFailedError(
                f"{server.name} exited with {server.process.returncode} before it was ready.\n"
                f"log tail:\n{server.log_tail()}"
            )
        try:
            status, body = server_get(server, path)
        except OSError as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return time.monotonic() - start
            last = f"{status} {body[:200]!r}"
        time.sleep(0.02)
    raise ServerFailedError(
        f"{server.name} was not ready within {timeout_s:g} s (last GET {path}: {last}).\n"
        f"log tail:\n{server.log_tail()}"
    )


def server_get(server: Server, path: str) -> tuple[int, bytes]:
    return get(server.port, path, timeout_s=1.0)


def stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group this process leads, then SIGKILL it after `grace_s`."""
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


class PeakRss:
    """Samples a server's RSS every `interval_s` in a thread while the block runs."""

    def __init__(self, server: Server, interval_s: float = 0.05) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.peak_bytes = self.server.rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak_bytes = max(self.peak_bytes, self.server.rss_bytes())

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_bytes = max(self.peak_bytes, self.server.rss_bytes())
