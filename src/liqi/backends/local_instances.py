"""The local Backend for service instances: each instance is a ``liqi serve`` process on this
machine.

An instance runs in a session of its own, so it outlives the control plane that started it
(a restart re-adopts it from its handle). Its folder holds ``spec.json``, ``instance.log``
(its output, which the instance itself rotates into ``instance.log.1`` ...: see
:mod:`liqi.logs.capture`) and ``state.json``, which the server writes (listening, ready,
failed, stopped: see :mod:`liqi.serving.state_file`): status comes from that file and the
process table, with no HTTP call. A process is recognised by the ``--instance-id`` marker in
its command line, so a recycled pid is never taken for it. ``memory_mb`` is enforced on each
:meth:`status` call over the process and its children (its log writer among them).

An instance whose spec carries a ``sandbox`` policy runs in :mod:`liqi.sandbox` (bubblewrap,
without ``--die-with-parent``, so it outlives the control plane): its handle is the host pid
of bwrap, its cgroup is named after the instance id (a restarted control plane finds it), it
is stopped by signalling the cgroup's members and killed with the cgroup; the cgroup's memory
limit holds too, and its OOM kill is the reason. The standby server is never used for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import psutil

from liqi.backends.instances import (
    SANDBOX_DIR,
    InstanceBackend,
    InstanceHandle,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
)
from liqi.backends.standby_pool import Claimed, Launch, StandbyPool
from liqi.errors import BackendError
from liqi.logs.reading import last_error_line
from liqi.logs.rotation import LogLimits
from liqi.sandbox import SandboxPolicy
from liqi.sandbox.cgroups import Cgroup, detect_layout
from liqi.sandbox.command import bwrap_argv
from liqi.sandbox.users import give_to_workload_user
from liqi.serving.state_file import CLAIM_FILE, ServerState, read_state

SPEC_FILE = "spec.json"
LOG_FILE = "instance.log"
STATE_FILE = "state.json"
OOM_FILE = "oom"  # the out-of-memory reason, once the backend killed the instance for it
# When a stopped instance gets SIGKILL: "monotonic <seconds>" on the machine's CLOCK_MONOTONIC
# (shared by every process, unmoved by a step of the wall clock); an older liqi wrote epoch
# seconds, which are still read.
STOP_FILE = "stop-deadline"
CGROUP_MARK = "@"  # a handle's ref: "<pid>" or "<pid>@<cgroup>" (a standby that became it)
MB = 1024 * 1024
log_warning = logging.getLogger(__name__).warning


def serve_command(spec: InstanceSpec, log: LogLimits | None = None) -> list[str]:
    """The ``liqi serve`` command line of ``spec`` (the token goes in the environment), its
    output to ``instance.log`` rotated at ``log``'s limits [default: LogLimits()]."""
    log = log or LogLimits()
    options: list[tuple[str, object | None]] = [
        ("--name", spec.service),
        ("--host", spec.host),
        ("--port", spec.port),
        ("--processor", spec.processor),
        ("--processor-path", spec.processor_path),
        ("--processor-entry", spec.processor_entry),
        ("--worker-threads", spec.worker_threads),
        ("--max-batch-size", spec.max_batch_size),
        ("--max-batch-wait-ms", spec.max_batch_wait_ms),
        ("--max-queue-size", spec.max_queue_size),
        ("--request-timeout-s", spec.request_timeout_s),
        ("--max-body-mb", spec.max_body_mb),
        ("--warmup-file", spec.warmup_file),
        ("--state-file", Path(spec.dir) / STATE_FILE),
        ("--log-file", Path(spec.dir) / LOG_FILE),
        ("--log-max-mb", repr(log.max_mb)),
        ("--log-backups", log.backups),
        ("--instance-id", spec.instance_id),
    ]
    argv = [sys.executable, "-m", "liqi", "serve", "--exit-on-load-failure"]
    for flag, value in options:
        if value is not None:
            argv += [flag, str(value)]
    return [*argv, "--", spec.model_uri]


class LocalInstanceBackend(InstanceBackend):
    name = "local"

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        standby_dir: Path | None = None,
        shared_readable: Sequence[str] = (),
        log_limits: LogLimits | None = None,
    ) -> None:
        """``environ``: the environment unconfined instances start from [default: this
        process's]. ``standby_dir``: keep standby servers there (TensorFlow imported) for the
        next TensorFlow instances (:mod:`liqi.backends.standby_pool`; ``shared_readable``:
        what sandboxed ones may read); None: every instance starts cold. ``log_limits``:
        where each ``instance.log`` rotates [default: LogLimits()]."""
        self._environ = environ
        self._log_limits = log_limits or LogLimits()
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # by instance id
        self._lock = threading.Lock()
        self._standbys = (
            StandbyPool(standby_dir, environ=environ, shared_readable=shared_readable)
            if standby_dir is not None
            else None
        )

    # -- start ----------------------------------------------------------------------------

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        folder = Path(spec.dir)
        extra = {**spec.env, "PYTHONUNBUFFERED": "1"}
        if spec.token:
            extra["LIQI_SERVE_TOKEN"] = spec.token
        cgroup: str | None = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for stale in (STATE_FILE, OOM_FILE, STOP_FILE):
                (folder / stale).unlink(missing_ok=True)
            (folder / SPEC_FILE).write_text(spec.redacted().to_json())
            (folder / LOG_FILE).touch()  # the server writes and rotates it (its own user)
            if spec.sandbox is not None:
                give_to_workload_user(SandboxPolicy.from_dict(spec.sandbox), folder)
            claimed = self._claim_standby(spec, extra)
            if claimed is not None:
                process, cgroup = claimed.process, claimed.cgroup
            elif spec.sandbox is not None:
                process = self._start_sandboxed(spec, extra)
            else:
                process = self._start_unconfined(spec, extra)
        except OSError as exc:
            raise BackendError(
                f"Cannot start instance {spec.instance_id} of service {spec.service!r} in "
                f"{folder}: {exc}. Check that the folder is writable and {sys.executable} "
                "runs."
            ) from None
        if self._standbys is not None and _wants_tensorflow(spec):
            self._standbys.spawn_for(spec)  # for the next one
        with self._lock:
            self._children[spec.instance_id] = process
        ref = str(process.pid) if cgroup is None else f"{process.pid}{CGROUP_MARK}{cgroup}"
        return InstanceHandle(self.name, ref)

    def _claim_standby(self, spec: InstanceSpec, extra: dict[str, str]) -> Claimed | None:
        if self._standbys is None or not _wants_tensorflow(spec):
            return None
        seen = seen_inside(spec)
        launch = Launch(
            argv=serve_command(seen, self._log_limits)[3:],  # after "python -m liqi"
            env=extra,
            cwd=seen.dir,
            log=str(Path(seen.dir) / LOG_FILE),
        )
        return self._standbys.claim(spec, launch)

    def _start_unconfined(
        self, spec: InstanceSpec, extra: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        base = os.environ if self._environ is None else self._environ
        env = {k: v for k, v in base.items() if k != "LIQI_SERVE_TOKEN"}
        env.update(extra)
        with open(Path(spec.dir) / LOG_FILE, "ab") as log:
            return subprocess.Popen(
                serve_command(spec, self._log_limits),
                cwd=spec.dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,  # until `liqi serve --log-file` captures its own output
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the control plane; own group
            )

    def _start_sandboxed(
        self, spec: InstanceSpec, extra: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        """``liqi serve`` in bubblewrap, in the cgroup named after the instance; its
        environment (never on its command line) is the policy's allow-list plus the spec's
        own."""
        assert spec.sandbox is not None
        policy = SandboxPolicy.from_dict(spec.sandbox)
        policy = replace(policy, env={**policy.env, **extra})
        cgroup = instance_cgroup(spec.instance_id)
        cgroup.remove()  # a stale one of an earlier start of this id
        cgroup.create(policy.memory_mb, policy.pids_max, policy.cpu)
        cmd = bwrap_argv(
            policy,
            serve_command(seen_inside(spec), self._log_limits),
            SANDBOX_DIR,
            cgroup.procs_files,
            die_with_parent=False,
        )
        try:
            with open(Path(spec.dir) / LOG_FILE, "ab") as log:
                return subprocess.Popen(
                    cmd,
                    cwd="/",
                    env=policy.env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    close_fds=True,
                    start_new_session=True,
                )
        except OSError:
            cgroup.remove()
            raise

    def close(self) -> None:
        """Stop the standby servers (instances keep running)."""
        if self._standbys is not None:
            self._standbys.close()

    # -- status ---------------------------------------------------------------------------

    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        pid, cgroup = _parse(handle, spec)
        folder = Path(spec.dir)
        alive, code = self._poll(pid, spec.instance_id, cgroup)
        if not alive:
            return self._ended(pid, spec, code, cgroup)
        self._kill_if_overdue(pid, spec, cgroup)
        rss = tree_rss(pid)
        if spec.memory_mb is not None and rss > spec.memory_mb * MB:
            with contextlib.suppress(OSError):  # our own folder: written unless disk full
                (folder / OOM_FILE).write_text(
                    f"out of memory: RSS {math.ceil(rss / MB)} MB exceeded the limit of "
                    f"{spec.memory_mb} MB (metadata.memory)"
                )
            _kill(pid, cgroup, signal.SIGKILL)
            alive, code = self._wait_gone(pid, spec.instance_id, cgroup, timeout_s=1.0)
            if not alive:
                return self._ended(pid, spec, code, cgroup)
        state = _own_state(folder, pid, spec)
        if state is not None and state.state == "ready":
            return InstanceStatus(InstancePhase.READY, url=state.url, rss_mb=rss // MB)
        url = state.url if state is not None else None
        return InstanceStatus(InstancePhase.STARTING, url=url, rss_mb=rss // MB)

    def _ended(
        self, pid: int, spec: InstanceSpec, code: int | None, cgroup: Cgroup | None
    ) -> InstanceStatus:
        """The status of a gone instance; a sandboxed one's cgroup says whether the kernel
        killed it at its limit, and is removed."""
        folder = Path(spec.dir)
        if cgroup is not None:
            if code is not None and 128 < code <= 128 + 64:
                code = -(code - 128)  # bwrap reports a signal as 128 + its number
            limit = cgroup.limit_reason("metadata.memory")
            if limit is not None and not (folder / OOM_FILE).exists():
                with contextlib.suppress(OSError):
                    (folder / OOM_FILE).write_text(limit)
            with contextlib.suppress(OSError):
                cgroup.remove()
        return exit_status(pid, folder, code, spec)

    def _poll(self, pid: int, instance_id: str, cgroup: Cgroup | None) -> tuple[bool, int | None]:
        """(alive, exit code): the code only for a process this object started."""
        with self._lock:
            process = self._children.get(instance_id)
        if process is not None and process.pid == pid:
            code = process.poll()
            if code is None and _is_zombie(pid):
                # Exiting: its main thread is a zombie while the kernel tears the rest down
                # (a large model takes ~0.1 s); no code of its own runs any more.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = process.wait(timeout=1.0)
                return False, code
            return code is None, code
        if cgroup is not None:  # its cgroup, which only root makes, says it is the one
            return pid in cgroup.pids() and not _is_zombie(pid), None
        return is_instance(pid, instance_id), None

    def _wait_gone(
        self, pid: int, instance_id: str, cgroup: Cgroup | None, timeout_s: float
    ) -> tuple[bool, int | None]:
        deadline = time.monotonic() + timeout_s
        alive, code = self._poll(pid, instance_id, cgroup)
        while alive and time.monotonic() < deadline:
            time.sleep(0.01)
            alive, code = self._poll(pid, instance_id, cgroup)
        return alive, code

    # -- stop -----------------------------------------------------------------------------

    def stop(self, handle: InstanceHandle, spec: InstanceSpec, *, grace_s: float = 30.0) -> None:
        pid, cgroup = _parse(handle, spec)
        if not self._poll(pid, spec.instance_id, cgroup)[0]:
            return
        stop_file = Path(spec.dir) / STOP_FILE
        deadline = time.monotonic() + grace_s
        earlier = _read_deadline(stop_file)
        if earlier is None or deadline < earlier:
            with contextlib.suppress(OSError):  # the timer below still enforces it
                stop_file.write_text(f"monotonic {deadline!r}")
        _kill(pid, cgroup, signal.SIGTERM)
        timer = threading.Timer(grace_s, self._kill_if_overdue, args=(pid, spec, cgroup))
        timer.daemon = True
        timer.start()

    def _kill_if_overdue(self, pid: int, spec: InstanceSpec, cgroup: Cgroup | None) -> None:
        """SIGKILL a stopped instance whose grace period is over (from the timer of
        :meth:`stop`, or from :meth:`status` after a control-plane restart)."""
        deadline = _read_deadline(Path(spec.dir) / STOP_FILE)
        if deadline is None or time.monotonic() < deadline:
            return
        if self._poll(pid, spec.instance_id, cgroup)[0]:
            _kill(pid, cgroup, signal.SIGKILL)


def seen_inside(spec: InstanceSpec) -> InstanceSpec:
    """``spec`` with its folder's paths as a sandboxed server sees them (at SANDBOX_DIR);
    ``spec`` itself when it is not sandboxed."""
    if spec.sandbox is None:
        return spec
    folder = Path(spec.dir)

    def inside(path: str | None) -> str | None:
        if path is None or not Path(path).is_relative_to(folder):
            return path
        return str(Path(SANDBOX_DIR) / Path(path).relative_to(folder))

    return replace(
        spec,
        dir=SANDBOX_DIR,
        model_uri=inside(spec.model_uri) or spec.model_uri,
        processor_path=inside(spec.processor_path),
        warmup_file=inside(spec.warmup_file),
    )


def instance_cgroup(instance_id: str, name: str | None = None) -> Cgroup:
    """The cgroup of a sandboxed instance: named after its id, found again by it after a
    restart; or ``name`` (a standby server's, which the instance's handle carries)."""
    layout = detect_layout()
    if isinstance(layout, str):
        raise BackendError(f"Cannot sandbox instance {instance_id}: {layout}")
    return Cgroup(layout, name or f"instance-{instance_id}")


def _parse(handle: InstanceHandle, spec: InstanceSpec) -> tuple[int, Cgroup | None]:
    """The pid in ``handle`` and, sandboxed, the cgroup of the instance."""
    pid, _, name = handle.ref.partition(CGROUP_MARK)
    if spec.sandbox is None:
        return int(pid), None
    return int(pid), instance_cgroup(spec.instance_id, name or None)


def _kill(pid: int, cgroup: Cgroup | None, sig: signal.Signals) -> None:
    """Signal the instance: its process group, or (sandboxed) every process of its cgroup
    but bwrap's own (they end with the server and hand its exit status back); SIGKILL
    empties the cgroup."""
    if cgroup is None:
        _kill_group(pid, sig)
        return
    if sig == signal.SIGKILL:
        with contextlib.suppress(BackendError):
            cgroup.kill()
        return
    for member in cgroup.pids():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if psutil.Process(member).name() != "bwrap":
                os.kill(member, sig)


def is_instance(pid: int, instance_id: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process carrying ``instance_id`` in its argv,
    or a standby server that was handed that instance."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        argv = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if instance_id in argv:
        return True
    if len(argv) >= 2 and argv[-2] == "liqi.serving.standby":
        try:
            claim = json.loads((Path(argv[-1]) / CLAIM_FILE).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(claim, dict) and claim.get("instance_id") == instance_id
    return False


def _wants_tensorflow(spec: InstanceSpec) -> bool:
    name = (spec.processor or "").lower()
    return name.startswith("tensorflow")


def _is_zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants (0 once gone)."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


def _kill_group(pid: int, sig: signal.Signals) -> None:
    """Signal the instance's process group (its pid: it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _read_deadline(path: Path) -> float | None:
    """A stop file's deadline on ``time.monotonic()``; None when there is none."""
    try:
        text = path.read_text().strip()
        if text.startswith("monotonic "):
            return float(text.removeprefix("monotonic "))
        return float(text) - time.time() + time.monotonic()  # epoch seconds, an older liqi's
    except (OSError, ValueError):
        return None


def _own_state(folder: Path, pid: int, spec: InstanceSpec) -> ServerState | None:
    """The state file, if this very process wrote it (not one before it). A sandboxed
    server writes its pid inside its PID namespace: there, the file is this start's because
    :meth:`LocalInstanceBackend.start` removed the one before."""
    state = read_state(folder / STATE_FILE)
    if state is None:
        return None
    return state if spec.sandbox is not None or state.pid == pid else None


def exit_status(pid: int, folder: Path, code: int | None, spec: InstanceSpec) -> InstanceStatus:
    """How the instance ``pid`` ended: its out-of-memory reason, the server's own "failed"
    reason, or its exit code and the last error line of its log."""
    state = _own_state(folder, pid, spec)
    if code is None and state is not None:
        code = state.exit_code
    try:
        reason = (folder / OOM_FILE).read_text()
    except OSError:
        reason = ""
    if reason:
        code = -signal.SIGKILL if code is None else code
    elif state is not None and state.state == "failed" and state.reason:
        reason = state.reason
    elif code is None:
        reason = "exited (no exit code: it was not started by this control plane)"
    else:
        reason = _describe_exit(code, folder / LOG_FILE)
    return InstanceStatus(InstancePhase.EXITED, reason=reason, exit_code=code)


def _describe_exit(code: int, log: Path) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"killed by signal {-code}"
        return f"killed by signal {-code} ({name})"
    if code == 0:
        return "exited with code 0"
    last = last_error_line(log)
    return f"exited with code {code}" + (f": {last}" if last else f"; see {log}")
