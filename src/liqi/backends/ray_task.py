"""One task of a liqi job on a Ray node: its process, started, watched and stopped there.

:class:`TaskActor` is the body of the Ray actor that :mod:`liqi.backends.ray_cluster` places
in the task's placement-group bundle. It picks the task's address on its own node (the node's
IP as Ray knows it, a port free there), runs the task's command as a subprocess (the script
unchanged, told the cluster's addresses by the driver), keeps its output in a file on the node
for the driver to read in pieces, and stops its whole process group on request. The process
gets SIGKILL when the actor's worker process dies (``PR_SET_PDEATHSIG``): a killed driver, whose
actors Ray then kills, leaves nothing running.

The process helpers (:func:`die_with`, :func:`tree_rss`, :func:`exit_reason`) serve the
one-task driver (:mod:`liqi.backends.ray_driver`) too.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from liqi.backends import job_files
from liqi.backends.job_files import JobFilesClient

PR_SET_PDEATHSIG = 1
#: The most output one poll returns (the rest comes with the next).
READ_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class TaskAddress:
    """Where a task listens: ``host:port`` on its node."""

    host: str
    port: int
    node_id: str

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TaskPoll:
    """A task's state: its exit code once it ended (negative: killed by that signal), its
    output from the offset asked for, and the RSS of its process tree."""

    code: int | None
    output: bytes
    rss_bytes: int


def die_with(parent: int) -> Callable[[], None]:
    """For a child, between fork and exec: SIGKILL when ``parent`` (the thread that forked it,
    the process's main thread here) dies (Linux). A parent that died before this ran is caught
    by the check that follows."""

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


def tree_rss(pid: int) -> int:
    """The summed RSS of process ``pid`` and its descendants (0 once it is gone)."""
    total = 0
    with contextlib.suppress(psutil.Error):
        parent = psutil.Process(pid)
        for member in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
    return total


def exit_reason(code: int, who: str = "the script") -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"{who} was killed by {name}"
    return f"{who} exited with code {code}"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class TaskActor:
    """A task's process on this node. Ray calls the methods one at a time (a plain actor)."""

    def __init__(self, job_id: str, task: str) -> None:
        self.job_id = job_id
        self.task = task
        self.folder = tempfile.mkdtemp(prefix=f"liqi-{job_id}-{task.replace(':', '-')}-")
        self.output = os.path.join(self.folder, "output")
        self.proc: subprocess.Popen[bytes] | None = None
        self.held: socket.socket | None = None
        self.files: JobFilesClient | None = None
        self.before: dict[str, tuple[int, int]] = {}

    def fetch(self, files: dict[str, str]) -> str:
        """Fetch the job's files into this task's folder on the node; the job folder there."""
        self.files = JobFilesClient.of(files)
        job = Path(self.folder) / "job"
        self.files.fetch(job)
        self.before = job_files.snapshot(job)
        return str(job)

    def send_outputs(self) -> int:
        """Send back what the task wrote under ``buckets/``; how many files."""
        assert self.files is not None
        job = Path(self.folder) / "job"
        names = job_files.changed(job, self.before)
        self.files.send_outputs(job, names)
        return len(names)

    def address(self) -> TaskAddress:
        """This node's IP (as Ray knows it) and a port free on it, held until :meth:`start`."""
        ray: Any = importlib.import_module("ray")
        host = str(ray.util.get_node_ip_address())
        held = socket.socket()
        held.bind((host, 0))
        self.held = held
        node_id = str(ray.get_runtime_context().get_node_id())
        return TaskAddress(host=host, port=int(held.getsockname()[1]), node_id=node_id)

    def start(self, argv: Sequence[str], env: Mapping[str, str], cwd: str) -> int:
        """Run the task's command in a process group of its own; its pid."""
        if self.held is not None:
            self.held.close()  # the port is the task's now
            self.held = None
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with(os.getpid()),
            )
        return self.proc.pid

    def poll(self, offset: int) -> TaskPoll:
        """The exit code (None while it runs), the output from ``offset`` on, the tree's RSS.
        The code is read before the output, so the output of an ended task is complete."""
        code = self.proc.poll() if self.proc is not None else None
        rss = tree_rss(self.proc.pid) if self.proc is not None and code is None else 0
        data = b""
        with contextlib.suppress(OSError), open(self.output, "rb") as fh:
            fh.seek(offset)
            data = fh.read(READ_MAX_BYTES)
        return TaskPoll(code=code, output=data, rss_bytes=rss)

    def stop(self, grace_s: float) -> int | None:
        """SIGTERM to the task's process group, SIGKILL after ``grace_s``; its exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        # Whatever the task started is stopped with it, even when the task itself has ended.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        return proc.returncode

    def close(self) -> None:
        """Remove the task's folder on the node (its output was read)."""
        if self.files is not None:
            self.files.close()
        job_files.remove(Path(self.folder))
