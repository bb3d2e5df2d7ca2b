"""The sandbox for processes that run user code (job tasks, model-server instances).

A workload runs as a user of its own (one per project, when liqi is root), in bubblewrap's
mount, PID, IPC and UTS namespaces, where only its own folders (read-write), its declared
inputs and the Python environment (read-only) and a private ``/tmp`` exist, with an
environment built from an allow-list, inside a cgroup that holds its memory, pids and CPU
limits and is killed as a whole when the workload ends. :class:`SandboxedProcess` is the seam.
"""

from liqi.sandbox.detect import choose_isolation, sandbox_available
from liqi.sandbox.policy import SandboxPolicy
from liqi.sandbox.process import SandboxedProcess, safe_env
from liqi.sandbox.users import workload_user, workload_user_name

__all__ = [
    "SandboxPolicy",
    "SandboxedProcess",
    "choose_isolation",
    "safe_env",
    "sandbox_available",
    "workload_user",
    "workload_user_name",
]
