"""What a workload's error says about the sandbox's own limits, in words a user can act on.

The kernel's cgroup limits (memory, processes) are read from the cgroup (``Cgroup.limit_reason``);
the others (open files, the size of ``/tmp``) show only as an errno in the workload's own error,
which :func:`explain_error` turns into the limit, its value and what to do. Pure: no I/O.
"""

from __future__ import annotations

import errno
import os

from liqi.sandbox.policy import SandboxPolicy

_EMFILE = (os.strerror(errno.EMFILE), f"[Errno {errno.EMFILE}]")
_ENOSPC = (os.strerror(errno.ENOSPC), f"[Errno {errno.ENOSPC}]")


def explain_error(error: str, policy: SandboxPolicy) -> str:
    """The sandbox limit ``error`` (a line of the workload's log) ran into, and how to stay
    under it; '' when it is none of them."""
    if any(mark in error for mark in _EMFILE):
        return (
            f"the sandbox allows each process {policy.nofile} open files (nofile); "
            "close files it no longer needs"
        )
    if any(mark in error for mark in _ENOSPC):
        return (
            f"if it was writing to /tmp: the sandbox's /tmp holds {policy.tmp_mb} MB (tmp_mb); "
            "write large files in the working folder instead"
        )
    return ""
