"""The sandbox's command line: bubblewrap, the workload user, and joining the cgroup.

``sh -c`` (tiny, no Python start-up) sets the open-files limit (soft and hard; inherited by
everything it execs and forks), writes its own pid into the cgroup's ``cgroup.procs`` files and
then execs ``bwrap``; so the process is in its cgroup before anything of the workload runs, and
everything it forks stays there. bwrap (run as root, or unprivileged with a user
namespace) makes the mount, PID, IPC and UTS namespaces; as root, ``setpriv`` inside then drops
to the workload user with no supplementary groups and no capabilities.
"""

from __future__ import annotations

import os
import resource
import shutil
import site
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path

from liqi.sandbox.policy import SandboxPolicy

MB = 1024 * 1024

# Sets the open-files limit to $1 (soft and hard), joins each cgroup named after it up to
# "--", then execs the rest; exit 125 when either fails.
_JOIN = (
    'ulimit -n "$1" || exit 125; shift; '
    'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
)

#: What of /etc a Python process needs: users and groups, name resolution, TLS roots.
ETC_FILES = (
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
    "/etc/mime.types",
)


def python_paths() -> list[str]:
    """Where this Python and its packages live, liqi's own source tree included."""
    import liqi

    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    found += [sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    found += site.getsitepackages()
    found.append(str(Path(liqi.__file__).resolve().parent.parent))
    found.append(os.path.dirname(os.path.realpath(sys.executable)))
    # .pth and PYTHONPATH entries, but never the working folder (it may be anything)
    here = os.getcwd()
    found += [p for p in sys.path if p and os.path.isdir(p) and os.path.abspath(p) != here]
    return found


def bwrap_argv(
    policy: SandboxPolicy,
    argv: Sequence[str],
    cwd: str,
    cgroup_procs: Sequence[str] = (),
    bwrap: str | None = None,
    die_with_parent: bool = True,
) -> list[str]:
    """The full command that runs ``argv`` in ``cwd`` under ``policy``; ``die_with_parent``
    False for a workload that outlives its starter (a model-server instance). Start it with
    ``policy.env`` as its whole environment (``Popen(env=policy.env)``): the environment is not
    on the command line, which every user of the host can read."""
    exe = bwrap or shutil.which("bwrap") or "bwrap"
    cmd = [exe, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if die_with_parent:
        cmd.append("--die-with-parent")
    cmd += ["--new-session", "--hostname", "liqi-sandbox"]
    if os.geteuid() != 0:
        cmd.append("--unshare-user")
    for link in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = Path("/") / link
        if host.is_symlink():
            cmd += ["--symlink", os.readlink(host), str(host)]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/dev/shm"]
    cmd += ["--perms", "1777", "--size", str(policy.tmp_mb * MB), "--tmpfs", "/tmp"]
    cmd += _mounts(policy)
    cmd += ["--chdir", cwd]
    if policy.uid is not None and os.geteuid() == 0:
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        gid = policy.gid if policy.gid is not None else policy.uid
        cmd += [setpriv, f"--reuid={policy.uid}", f"--regid={gid}", "--clear-groups"]
        cmd += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    cmd += list(argv)
    nofile = str(_nofile(policy.nofile))
    return ["/bin/sh", "-c", _JOIN, "liqi-sandbox", nofile, *cgroup_procs, "--", *cmd]


def _nofile(wanted: int) -> int:
    """The open-files limit to set: ``wanted``, or the caller's own hard limit when that is
    lower and only root could raise it."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if os.geteuid() == 0 or hard == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, hard)


def _mounts(policy: SandboxPolicy) -> list[str]:
    """What of the host exists inside: the system and Python read-only, the policy's folders,
    an empty folder over each hidden path that something bound contains; parents first."""
    cmd: list[str] = []
    cmd += ["--perms", "0755", "--dir", "/etc"]
    readable = _existing(["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"])
    readable += _existing(ETC_FILES) + _existing(python_paths()) + _existing(policy.readable)
    binds = [(p, "--ro-bind") for p in _outermost(readable)]
    binds += [(p, "--bind") for p in _outermost(_existing(policy.writable))]
    bound = [p for p, _ in binds]
    binds += [(inside, "--bind") for inside in policy.binds]  # from its host folder
    for path in _existing(policy.hidden):
        if any(_inside(path, outer) and path != outer for outer in bound):
            binds.append((path, "--tmpfs"))  # an empty folder over it, before what is inside
    binds.sort(key=lambda b: (b[0].count("/"), b[0], b[1] != "--tmpfs"))
    made: set[str] = {"/", "/tmp", "/etc", "/proc", "/dev"}
    for path, kind in binds:
        if Path(path).is_symlink() and Path("/") / path.strip("/").split("/")[0] == Path(path):
            continue  # a top-level link such as /lib -> usr/lib is made above
        for parent in reversed(Path(path).parents):
            if str(parent) not in made:
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        made.add(path)
        if kind == "--tmpfs":
            cmd += ["--perms", "0755", kind, path]
        else:
            cmd += [kind, policy.binds.get(path, path), path]
    return cmd


def _existing(paths: Iterable[str]) -> list[str]:
    return [os.path.abspath(p) for p in paths if p and os.path.lexists(p)]


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _outermost(paths: list[str]) -> list[str]:
    """The paths without those inside another one of them (bound once, with its parent)."""
    unique = sorted(set(paths), key=lambda p: (p.count("/"), p))
    kept: list[str] = []
    for path in unique:
        if not any(_inside(path, k) for k in kept):
            kept.append(path)
    return kept
