"""Standby model servers: processes that have imported TensorFlow and wait to become the next
TensorFlow instance (:mod:`liqi.serving.standby`), so ``create``, ``scale`` or a wake from
zero does not pay for that import (seconds).

A standby reads its claim, one JSON line, from its stdin: a pipe only the control plane holds,
so the instance's token and workload key never touch the disk, and an unclaimed standby ends
when the control plane does (end of file). A claimed one outlives it, as instances do.

Unconfined (isolation ``none``), one standby serves every instance. Sandboxed, a standby runs
in :mod:`liqi.sandbox` as the workload user of the instance that asked for it, with the same
environment allow-list, and sees a folder of its own at ``/instance``; it can become only an
instance with that very sandbox (the same user, environment and limits, nothing to read that
it was not shown). Becoming one, the instance's staged files move into the standby's folder,
which then takes the instance folder's name (a bind mount follows its folder), and its cgroup
gets the instance's limits; the cgroup keeps its own name, which the instance's handle
carries. At most ``max_standbys`` wait at once, the least recently used stopped first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import psutil

from liqi.backends.instances import SANDBOX_DIR, InstanceSpec
from liqi.errors import BackendError
from liqi.sandbox import SandboxPolicy
from liqi.sandbox.cgroups import Cgroup, detect_layout
from liqi.sandbox.command import bwrap_argv
from liqi.sandbox.users import give_to_workload_user
from liqi.serving.state_file import CLAIM_FILE, READY_FILE

log_warning = logging.getLogger(__name__).warning
STANDBY_LOG = "standby.log"
#: A standby using more than this share of the instance's memory limit is not used for it.
MEMORY_HEADROOM = 0.8


@dataclass
class Standby:
    process: subprocess.Popen[bytes]
    folder: Path  # on this machine; ``/instance`` inside a sandboxed one
    key: str  # "" unconfined; the sandbox it runs in otherwise (see sandbox_key)
    policy: SandboxPolicy | None = None
    cgroup: Cgroup | None = None
    used: float = 0.0  # when it was last wanted (monotonic)

    def ready(self) -> bool:
        return self.process.poll() is None and (self.folder / READY_FILE).exists()


@dataclass(frozen=True)
class Launch:
    """What a standby runs to become an instance, its paths as it sees them."""

    argv: list[str]  # after ``python -m liqi``: a ``liqi serve`` command line
    env: dict[str, str]  # added to its environment (the token, the workload key...)
    cwd: str
    log: str  # its stdout and stderr from then on


@dataclass(frozen=True)
class Claimed:
    """A standby that became an instance: its process, and its cgroup when sandboxed."""

    process: subprocess.Popen[bytes]
    cgroup: str | None = None


def sandbox_key(policy: SandboxPolicy) -> str:
    """What an instance's and a standby's sandboxes must share for one to become the other:
    all but its name, folders, memory and CPU (these are set when it becomes the instance)."""
    common = replace(policy, name="", binds={}, writable=(), readable=(), memory_mb=None, cpu=None)
    return json.dumps(common.to_dict(), sort_keys=True)


class StandbyPool:
    def __init__(
        self,
        folder: Path,
        *,
        environ: Mapping[str, str] | None = None,
        shared_readable: Sequence[str] = (),
        max_standbys: int = 2,
    ) -> None:
        """``folder``: where standbys' folders are made (beside the instances' folders: a
        claimed one is renamed into place). ``environ``: an unconfined standby's environment
        [default: this process's]. ``shared_readable``: what every sandboxed instance may read
        besides its folder (the cache of unpacked archives), shown to sandboxed standbys."""
        self._folder = folder
        self._environ = environ
        self._shared = tuple(shared_readable)
        self._max = max_standbys
        self._standbys: dict[str, Standby] = {}
        self._lock = threading.Lock()
        self._sweep()

    def _sweep(self) -> None:
        """Remove the folders of standbys an earlier control plane left: unclaimed ones ended
        with it; a claimed unconfined one keeps its folder while it runs (the folder names
        its instance)."""
        folders: list[Path] = []
        with contextlib.suppress(OSError):
            folders = [f for f in self._folder.glob("standby-*") if f.is_dir()]
        if not folders:
            return
        running = " ".join(
            " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
        )
        for folder in folders:
            if not (folder / CLAIM_FILE).exists() or str(folder) not in running:
                shutil.rmtree(folder, ignore_errors=True)

    # -- claim ----------------------------------------------------------------------------

    def claim(self, spec: InstanceSpec, seen: Launch) -> Claimed | None:
        """Hand the instance to a ready standby, launched as ``seen`` says (paths as the
        server sees them); None when there is none for it (start it cold)."""
        policy = SandboxPolicy.from_dict(spec.sandbox) if spec.sandbox is not None else None
        key = sandbox_key(policy) if policy is not None else ""
        with self._lock:
            standby = self._standbys.get(key)
            if standby is not None:
                standby.used = time.monotonic()
            if standby is None or not standby.ready() or not _fits(standby, spec, policy):
                return None
            del self._standbys[key]
        try:
            if policy is None:
                _mark_claim(standby.folder, spec.instance_id)
                _send(standby, spec, seen)
                return Claimed(standby.process)
            assert standby.cgroup is not None
            standby.cgroup.set_limits(policy.memory_mb, policy.pids_max, policy.cpu)
            _move_in(standby.folder, Path(spec.dir))
            _send(standby, spec, seen)
            return Claimed(standby.process, standby.cgroup.name)
        except (OSError, BackendError) as exc:
            self._stop(standby)
            raise BackendError(
                f"Cannot hand instance {spec.instance_id} to a standby server: {exc}"
            ) from None

    # -- spawn ----------------------------------------------------------------------------

    def spawn_for(self, spec: InstanceSpec) -> None:
        """Start a standby for instances like ``spec`` unless one runs (it imports
        TensorFlow: seconds of CPU); the least recently used one goes past the limit."""
        policy = SandboxPolicy.from_dict(spec.sandbox) if spec.sandbox is not None else None
        key = sandbox_key(policy) if policy is not None else ""
        evicted: list[Standby] = []
        with self._lock:
            found = self._standbys.pop(key, None)
            if found is not None and found.process.poll() is None:
                found.used = time.monotonic()
                self._standbys[key] = found
                return
            if found is not None:
                evicted.append(found)  # it ended (its folder goes)
            try:
                standby = self._start(key, policy)
            except (OSError, BackendError) as exc:
                log_warning("cannot start a standby model server: %s", exc)
            else:
                self._standbys[key] = standby
            while len(self._standbys) > self._max:
                oldest = min(self._standbys, key=lambda k: self._standbys[k].used)
                evicted.append(self._standbys.pop(oldest))
        for old in evicted:
            self._stop(old)

    def _start(self, key: str, policy: SandboxPolicy | None) -> Standby:
        self._folder.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="standby-", dir=self._folder))
        command = [sys.executable, "-m", "liqi.serving.standby"]
        if policy is None:
            base = os.environ if self._environ is None else self._environ
            env = {k: v for k, v in base.items() if k not in ("LIQI_SERVE_TOKEN",)}
            process = _popen([*command, str(folder)], folder, env, cwd=str(folder))
            return Standby(process, folder, key, used=time.monotonic())
        layout = detect_layout()
        if isinstance(layout, str):
            raise BackendError(layout)
        own = replace(
            policy,
            name=folder.name,
            binds={SANDBOX_DIR: str(folder)},
            writable=(),
            readable=tuple(p for p in self._shared if os.path.exists(p)),
            memory_mb=None,
            cpu=None,
        )
        give_to_workload_user(own, folder)
        cgroup = Cgroup(layout, folder.name)
        cgroup.create(None, own.pids_max, None)
        argv = bwrap_argv(
            own,
            [*command, SANDBOX_DIR],
            SANDBOX_DIR,
            cgroup.procs_files,
            die_with_parent=False,  # it ends at the end of its stdin; claimed, it lives on
        )
        try:
            process = _popen(argv, folder, own.env, cwd="/")
        except OSError:
            cgroup.remove()
            raise
        return Standby(process, folder, key, own, cgroup, used=time.monotonic())

    # -- stop -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every standby still waiting."""
        with self._lock:
            waiting, self._standbys = list(self._standbys.values()), {}
        for standby in waiting:
            self._stop(standby)

    def _stop(self, standby: Standby) -> None:
        if standby.cgroup is not None:
            standby.cgroup.remove()
        else:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(standby.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            standby.process.wait(timeout=5)
        if standby.process.stdin is not None:
            with contextlib.suppress(OSError):
                standby.process.stdin.close()
        if not (standby.folder / CLAIM_FILE).exists():
            shutil.rmtree(standby.folder, ignore_errors=True)


def _popen(
    argv: list[str], folder: Path, env: Mapping[str, str], *, cwd: str
) -> subprocess.Popen[bytes]:
    with open(folder / STANDBY_LOG, "ab") as log:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.PIPE,  # the claim comes this way
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
        )


def _fits(standby: Standby, spec: InstanceSpec, policy: SandboxPolicy | None) -> bool:
    """Whether the standby can become ``spec``: shown all it must read (what does not exist
    is not shown to the instance either), within its memory."""
    if policy is None or standby.policy is None:
        return policy is None and standby.policy is None
    shown = standby.policy.readable
    for path in policy.readable:
        if os.path.exists(path) and not any(Path(path).is_relative_to(outer) for outer in shown):
            return False
    if policy.memory_mb is None or standby.cgroup is None:
        return True
    return standby.cgroup.memory_bytes() <= MEMORY_HEADROOM * policy.memory_mb * 2**20


def _mark_claim(folder: Path, instance_id: str) -> None:
    """Which instance an unconfined standby became (a restarted control plane reads it)."""
    tmp = folder / f".{CLAIM_FILE}.tmp"
    tmp.write_text(json.dumps({"instance_id": instance_id}))
    tmp.rename(folder / CLAIM_FILE)


def _move_in(standby_folder: Path, instance_folder: Path) -> None:
    """The instance's staged files into the standby's folder, which then takes the instance
    folder's name: inside, the standby sees them at ``/instance``."""
    (standby_folder / READY_FILE).unlink(missing_ok=True)
    for entry in instance_folder.iterdir():
        entry.rename(standby_folder / entry.name)
    instance_folder.rmdir()
    standby_folder.rename(instance_folder)


def _send(standby: Standby, spec: InstanceSpec, seen: Launch) -> None:
    claim = {"instance_id": spec.instance_id, **asdict(seen)}
    stdin = standby.process.stdin
    assert stdin is not None
    (standby.folder / READY_FILE).unlink(missing_ok=True)  # no longer waiting
    stdin.write(json.dumps(claim).encode() + b"\n")
    stdin.close()
