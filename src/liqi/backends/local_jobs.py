"""The local Backend: each job is a supervisor process on this machine, detached from the
control plane so that it outlives a restart, running the job's tasks as its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from liqi.backends.jobs import Backend, Handle, LaunchPlan, RunStatus, TaskResult
from liqi.errors import BackendError

PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
SUPERVISOR_LOG = "supervisor.log"
PID_FILE = "supervisor.pid"


class LocalBackend(Backend):
    name = "local"

    def launch(self, plan: LaunchPlan) -> Handle:
        job_dir = Path(plan.job_dir)
        (job_dir / PLAN_FILE).write_text(plan.to_json())
        (job_dir / RESULT_FILE).unlink(missing_ok=True)
        (job_dir / PID_FILE).unlink(missing_ok=True)
        # The supervisor forks itself away (--detach) so it is nobody's child: it outlives
        # the control plane, and no zombie or process object is left behind here.
        cmd = [sys.executable, "-m", "liqi.training.supervisor", "--detach", str(job_dir)]
        try:
            with open(job_dir / SUPERVISOR_LOG, "ab") as log:
                code = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    close_fds=True,
                    cwd=job_dir,
                    timeout=60,
                    check=False,
                ).returncode
            pid = int((job_dir / PID_FILE).read_text())
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            raise BackendError(f"Cannot start the job supervisor: {exc}") from None
        if code != 0:
            raise BackendError(
                f"The job supervisor exited with code {code}; see {job_dir / SUPERVISOR_LOG}"
            )
        return Handle(backend=self.name, ref=str(pid))

    def status(self, handle: Handle, job_dir: Path) -> RunStatus:
        result = TaskResult.read(job_dir / RESULT_FILE)
        if result is not None:
            return RunStatus(running=False, result=result)
        if _is_supervisor(int(handle.ref), job_dir):
            return RunStatus(running=True)
        # It may have written its result between the two checks.
        result = TaskResult.read(job_dir / RESULT_FILE)
        if result is not None:
            return RunStatus(running=False, result=result)
        return RunStatus(
            running=False,
            detail=f"the job's supervisor (pid {handle.ref}) is gone without a result; see "
            f"{job_dir / SUPERVISOR_LOG}",
        )

    def launched(self, job_dir: Path) -> Handle | None:
        try:
            pid = int((job_dir / PID_FILE).read_text())
        except (OSError, ValueError):
            return None
        if _is_supervisor(pid, job_dir) or (job_dir / RESULT_FILE).exists():
            return Handle(backend=self.name, ref=str(pid))
        return None

    def cancel(self, handle: Handle) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(handle.ref), signal.SIGTERM)


def _is_supervisor(pid: int, job_dir: Path) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and str(job_dir) in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
