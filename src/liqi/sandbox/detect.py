"""Can this machine sandbox workloads? A real probe, run once per process."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from liqi.errors import ConfigError
from liqi.sandbox.cgroups import Cgroup, detect_layout
from liqi.sandbox.command import bwrap_argv
from liqi.sandbox.policy import SandboxPolicy

PROBE_TIMEOUT_S = 30.0


@functools.cache
def sandbox_available() -> tuple[bool, str]:
    """(True, "") when workloads can run sandboxed here, else (False, why)."""
    if shutil.which("bwrap") is None:
        return False, "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return False, "setpriv (util-linux) is not installed: it drops to the workload user"
    if os.geteuid() != 0:
        userns = Path("/proc/sys/user/max_user_namespaces")
        if userns.exists() and userns.read_text().strip() == "0":
            return False, "not root and user namespaces are disabled (user.max_user_namespaces=0)"
    layout = detect_layout()
    if isinstance(layout, str):
        return False, layout
    cgroup = Cgroup(layout, f"probe-{uuid.uuid4().hex[:8]}")
    try:
        cgroup.create(memory_mb=64, pids_max=16, cpu=None)
    except Exception as exc:
        return False, f"cgroups are not writable: {exc}"
    try:
        policy = SandboxPolicy(name="probe", env={"PATH": "/usr/bin:/bin"})
        argv = [sys.executable, "-I", "-S", "-c", "print('ok')"]
        cmd = bwrap_argv(policy, argv, "/", cgroup.procs_files)
        done = subprocess.run(
            cmd,
            env=dict(policy.env),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap cannot start: {exc}"
    finally:
        cgroup.remove()
    if done.returncode != 0 or done.stdout.strip() != "ok":
        detail = (done.stderr.strip() or f"exit code {done.returncode}")[-300:]
        return False, f"bwrap cannot run a sandboxed Python here: {detail}"
    return True, ""


def choose_isolation(requested: str | None) -> tuple[str, str]:
    """("sandbox" | "none", a warning or ""): the isolation to run with.

    None (not set) means the sandbox where this machine can have one, else "none" with a
    warning that says why.

    Raises:
        ConfigError: "sandbox" was asked for and this machine cannot sandbox.
    """
    if requested == "none":
        return "none", "isolation is 'none': user code runs as the server's own user, unconfined"
    ok, reason = sandbox_available()
    if ok:
        return "sandbox", ""
    if requested == "sandbox":
        raise ConfigError(
            f"Isolation 'sandbox' is not available here: {reason}. Fix that, or run with "
            "--isolation none (LIQI_ISOLATION=none) on a machine only trusted users use."
        )
    return "none", (
        f"no sandbox on this machine ({reason}): user code runs as the server's own user, "
        "unconfined; set LIQI_ISOLATION=none to say that is intended"
    )
