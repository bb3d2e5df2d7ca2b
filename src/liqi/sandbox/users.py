"""Workload users: one Unix user per project, created by liqi when it runs as root.

A workload runs as ``liqi-p<project>``, a system user with no home and no login shell, so its
files and processes are not the control plane's. When liqi is not root there is no user to
switch to and the workload keeps the caller's user (the sandbox still hides the files).
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from liqi.errors import BackendError
from liqi.sandbox.policy import SandboxPolicy

logger = logging.getLogger(__name__)

_LOCK = Path(tempfile.gettempdir()) / "liqi-workload-users.lock"
_SAFE = re.compile(r"[^a-z0-9]")


def workload_user_name(project: str) -> str:
    """``liqi-p<project>``, reduced to what ``useradd`` accepts (at most 32 characters)."""
    return f"liqi-p{_SAFE.sub('', project.lower())}"[:32]


def workload_user(project: str) -> tuple[int, int] | None:
    """(uid, gid) of the project's workload user, created if missing; None when not root."""
    if os.geteuid() != 0:
        return None
    name = workload_user_name(project)
    found = _lookup(name)
    if found is not None:
        return found
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    # O_NOFOLLOW: root never opens a link someone else left at the lock's path
    fd = os.open(_LOCK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _lookup(name)  # another process may have made it while we waited
        if found is not None:
            return found
        cmd = [useradd, "--system", "--no-create-home", "--user-group"]
        cmd += ["--shell", "/usr/sbin/nologin", "--home-dir", "/nonexistent", name]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0 and _lookup(name) is None:
            raise BackendError(
                f"Cannot create the workload user '{name}': {done.stderr.strip()}. "
                "Run liqi as root, or set isolation to 'none'."
            )
        logger.info("created workload user %s for project=%s", name, project)
    found = _lookup(name)
    assert found is not None
    return found


def _lookup(name: str) -> tuple[int, int] | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def give_to_workload_user(policy: SandboxPolicy, *folders: Path | str) -> None:
    """Make ``folders`` (recursively; the policy's writable, bound and readable paths when
    none are given) the workload user's, when liqi is root and there is one. Bound read-only,
    owning them does not let the workload change them; it lets it read them whatever the
    server's umask was."""
    if policy.uid is None or os.geteuid() != 0:
        return
    gid = policy.gid if policy.gid is not None else policy.uid
    for top in folders or (*policy.writable, *policy.binds.values(), *policy.readable):
        for root, dirs, files in os.walk(top):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, policy.uid, gid)
