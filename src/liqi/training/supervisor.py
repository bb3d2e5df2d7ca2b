"""The job supervisor: ``python -m liqi.training.supervisor <job_dir>``.

Started by the local Backend with ``--detach`` (it forks away, so it outlives the control
plane and is nobody's child), it runs the tasks of ``<job_dir>/plan.json`` (each in
its own process group, output to its log file), enforces the plan's timeout and memory limit
over the whole process tree, stops parameter servers when the workers are done, and writes
``<job_dir>/result.json`` (atomically) when everything has ended. SIGTERM asks it to cancel the
job: the tasks get SIGTERM, then SIGKILL after the grace period.

When the plan has a ``sandbox`` policy, each task runs in a :class:`~liqi.sandbox.SandboxedProcess`
(its own cgroup, namespaces and workload user); the supervisor stays outside and reports. When
the job ends, however it ends, every task's cgroup is killed and removed: nothing a job started
survives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

import psutil

from liqi.backends.jobs import LaunchPlan, TaskResult, TaskSpec
from liqi.logs.reading import last_error_line
from liqi.sandbox import SandboxedProcess, SandboxPolicy
from liqi.sandbox.cgroups import sweep_stale
from liqi.sandbox.limits import explain_error
from liqi.sandbox.users import give_to_workload_user

TICK_S = 0.1
MB = 1024 * 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class Supervisor:
    def __init__(self, plan: LaunchPlan) -> None:
        self.plan = plan
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.sandboxes: dict[str, SandboxedProcess] = {}
        self.policy = SandboxPolicy.from_dict(plan.sandbox) if plan.sandbox else None
        self.specs: dict[str, TaskSpec] = {t.name: t for t in plan.tasks}
        self.cancelled = False
        self.peak_rss = 0
        self.started_at = _now()

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.cancelled = True

    def start(self) -> None:
        if self.policy is not None:
            give_to_workload_user(self.policy)
        for task in self.plan.tasks:
            if self.policy is not None:
                self.start_sandboxed(task, self.policy)
                continue
            env = {**os.environ, **task.env, "PYTHONUNBUFFERED": "1"}
            log = open(task.log, "ab")  # noqa: SIM115 - the child holds it; closed at exit
            self.procs[task.name] = subprocess.Popen(
                list(task.argv),
                cwd=task.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.close()

    def start_sandboxed(self, task: TaskSpec, policy: SandboxPolicy) -> None:
        env = {**policy.env, **task.env, "PYTHONUNBUFFERED": "1"}
        name = f"{policy.name}-{task.name.replace(':', '-')}"
        with open(task.log, "ab") as log:
            sandboxed = SandboxedProcess(
                replace(policy, name=name, env=env),
                task.argv,
                task.cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.sandboxes[task.name] = sandboxed
        self.procs[task.name] = sandboxed.popen

    def tree_rss(self) -> int:
        total = 0
        for proc in self.procs.values():
            if proc.poll() is not None:
                continue
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                for member in [parent, *parent.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += member.memory_info().rss
        self.peak_rss = max(self.peak_rss, total)
        return total

    def stop_all(self, names: list[str] | None = None) -> None:
        targets = [n for n in (names or list(self.procs)) if self.procs[n].poll() is None]
        for name in targets:
            if name in self.sandboxes:
                _signal_workload(self.sandboxes[name], signal.SIGTERM)
            else:
                _signal_group(self.procs[name].pid, signal.SIGTERM)
        deadline = time.monotonic() + self.plan.grace_s
        while time.monotonic() < deadline and any(self.procs[n].poll() is None for n in targets):
            time.sleep(TICK_S)
        for name in targets:
            if name in self.sandboxes:
                self.sandboxes[name].cgroup.kill()
            elif self.procs[name].poll() is None:
                _signal_group(self.procs[name].pid, signal.SIGKILL)
        for name in targets:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.procs[name].wait(timeout=10)

    def code(self, name: str) -> int | None:
        """The task's exit code; negative when a signal killed it (bwrap says 128 + signal)."""
        code = self.procs[name].poll()
        if name in self.sandboxes and code is not None and 128 < code <= 128 + 64:
            return -(code - 128)
        return code

    def verdict(self) -> tuple[str, str] | None:
        """(state, reason) once the job is over, else None."""
        workers = [n for n, t in self.specs.items() if not t.is_ps]
        for name in workers:
            code = self.code(name)
            if code is not None and code != 0:
                return "FAILED", self.exit_reason(name, code, len(self.procs) == 1)
        if all(self.code(n) == 0 for n in workers):
            return "SUCCEEDED", ""
        for name, spec in self.specs.items():
            code = self.code(name)
            if spec.is_ps and code is not None:
                reason = self.exit_reason(name, code, False)
                return "FAILED", reason + " before the workers finished"
        return None

    def exit_reason(self, name: str, code: int, only: bool) -> str:
        """How task ``name`` ended: a limit the kernel enforced, else its exit and the last
        error of its log (with the sandbox limit that error names, if any)."""
        sandboxed = self.sandboxes.get(name)
        limit = sandboxed.limit_reason() if sandboxed is not None else None
        if limit is not None and limit.startswith("out of memory"):
            return f"memory limit exceeded: {limit}"
        reason = _exit_reason(name, code, only)
        if limit is not None:
            return f"{reason}: {limit}"
        error = last_error_line(Path(self.specs[name].log)) if code > 0 else ""
        if not error:
            return reason
        hint = explain_error(error, self.policy) if self.policy is not None else ""
        return f"{reason}: {error}" + (f" ({hint})" if hint else "")

    def close(self) -> None:
        """Kill and remove every task's cgroup: nothing the job started outlives it."""
        for name, sandboxed in self.sandboxes.items():
            try:
                sandboxed.close()
            except Exception as exc:  # the result must still be written
                sys.stderr.write(f"cannot close the sandbox of task {name}: {exc!r}\n")
        if self.sandboxes:
            sweep_stale()  # those of jobs whose supervisor was killed

    def run(self) -> TaskResult:
        self.start()
        started = time.monotonic()
        limit = self.plan.memory_mb
        while True:
            if self.cancelled:
                self.stop_all()
                return self.result("CANCELLED", "killed on request")
            rss = self.tree_rss()
            if limit is not None and rss > limit * MB:
                self.stop_all()
                return self.result(
                    "FAILED",
                    f"memory limit exceeded: the job used {rss // MB} MB, over its limit of "
                    f"{limit} MB (memory_mb)",
                )
            timeout = self.plan.timeout_s
            if timeout is not None and time.monotonic() - started > timeout:
                self.stop_all()
                return self.result("FAILED", f"timed out after {timeout:g} s (timeout_s)")
            verdict = self.verdict()
            if verdict is not None:
                self.stop_all()
                return self.result(*verdict)
            time.sleep(TICK_S)

    def result(self, state: str, reason: str) -> TaskResult:
        codes = {name: self.code(name) for name in self.procs}
        sandboxed = sum(s.peak_memory_bytes() for s in self.sandboxes.values())
        self.peak_rss = max(self.peak_rss, sandboxed)
        chief = next(iter(self.procs), None)
        return TaskResult(
            state=state,
            exit_code=codes.get(chief) if chief else None,
            reason=reason,
            peak_rss_mb=self.peak_rss // MB,
            started_at=self.started_at,
            ended_at=_now(),
            tasks=codes,
        )


def _exit_reason(name: str, code: int, only: bool) -> str:
    who = "the script" if only else f"task {name}"
    if code < 0:
        try:
            signame = signal.Signals(-code).name
        except ValueError:
            signame = f"signal {-code}"
        return f"{who} was killed by {signame}"
    return f"{who} exited with code {code}"


def _signal_workload(sandboxed: SandboxedProcess, sig: signal.Signals) -> None:
    """Signal the workload's own processes; bwrap (outside, and its init inside) ends with
    them and hands the script's exit status back."""
    for pid in sandboxed.cgroup.pids():
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if psutil.Process(pid).name() != "bwrap":
                os.kill(pid, sig)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def write_result(job_dir: Path, result: TaskResult) -> None:
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(asdict(result), indent=2))
    os.replace(tmp, job_dir / "result.json")


def detach(job_dir: Path) -> None:
    """Fork: the parent records the child's pid in ``supervisor.pid`` and exits; the child,
    in a session of its own, carries on as the supervisor."""
    pid = os.fork()
    if pid:
        tmp = job_dir / "supervisor.pid.tmp"
        tmp.write_text(str(pid))
        os.replace(tmp, job_dir / "supervisor.pid")
        os._exit(0)
    os.setsid()


def main(argv: list[str]) -> int:
    args = argv[1:]
    detached = bool(args) and args[0] == "--detach"
    if detached:
        args = args[1:]
    if len(args) != 1:
        sys.stderr.write("usage: python -m liqi.training.supervisor [--detach] JOB_DIR\n")
        return 2
    job_dir = Path(args[0])
    if detached:
        detach(job_dir)
    plan = LaunchPlan.from_json((job_dir / "plan.json").read_text())
    supervisor = Supervisor(plan)
    signal.signal(signal.SIGTERM, supervisor.on_signal)
    signal.signal(signal.SIGINT, supervisor.on_signal)
    try:
        result = supervisor.run()
    except Exception as exc:  # the job must always end with a result
        supervisor.stop_all()
        result = supervisor.result("FAILED", f"the supervisor failed: {exc!r}")
    finally:
        supervisor.close()
    write_result(job_dir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
