"""Start a process in a sandbox, and end it with everything it started."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Mapping, Sequence
from typing import IO

from liqi.errors import BackendError
from liqi.sandbox.cgroups import Cgroup, detect_layout
from liqi.sandbox.command import bwrap_argv
from liqi.sandbox.policy import SandboxPolicy

#: Variables of the caller's environment a workload may inherit: none of them is a secret.
SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONHASHSEED")


def safe_env(environ: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The allow-listed part of ``environ`` plus ``extra``: a workload's whole environment."""
    env = {key: environ[key] for key in SAFE_ENV if key in environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("HOME", "/tmp")
    return {**env, **extra}


class SandboxedProcess:
    """A process started in its own cgroup and namespaces; :meth:`close` kills all of it."""

    def __init__(
        self,
        policy: SandboxPolicy,
        argv: Sequence[str],
        cwd: str,
        stdout: IO[bytes] | int | None = None,
        stderr: IO[bytes] | int | None = None,
    ) -> None:
        layout = detect_layout()
        if isinstance(layout, str):
            raise BackendError(f"Cannot sandbox {policy.name}: {layout}")
        self.policy = policy
        self.cgroup = Cgroup(layout, f"{policy.name}-{uuid.uuid4().hex[:8]}")
        self.cgroup.create(policy.memory_mb, policy.pids_max, policy.cpu)
        cmd = bwrap_argv(policy, argv, cwd, self.cgroup.procs_files)
        try:
            self.popen: subprocess.Popen[bytes] = subprocess.Popen(
                cmd,
                cwd="/",
                env=dict(policy.env),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            self.cgroup.remove()
            raise BackendError(f"Cannot start the sandbox of {policy.name}: {exc}") from None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """SIGKILL every process of the workload, however far it forked away."""
        self.cgroup.kill()
        self.popen.wait(timeout=10)

    def limit_reason(self) -> str | None:
        return self.cgroup.limit_reason()

    def peak_memory_bytes(self) -> int:
        return self.cgroup.peak_memory_bytes()

    def close(self) -> None:
        """Kill what is left and remove the cgroup."""
        self.cgroup.remove()
        if self.popen.poll() is None:
            self.popen.wait(timeout=10)
