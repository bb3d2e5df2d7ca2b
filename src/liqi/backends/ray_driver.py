"""The driver of a liqi job on Ray:
``python -m liqi.backends.ray_driver JOB_DIR [--placement-timeout-s SECONDS]``.

It is the entrypoint of the Ray job that :class:`liqi.backends.ray_jobs.RayJobBackend`
submits. It reads the job's ``plan.json``, runs its one task with the task's argv,
environment and working folder (a plan of several tasks, PAI's ``-Dcluster``, is run by
:class:`liqi.backends.ray_cluster.ClusterDriver` instead: a placement group, an actor per
task), and writes ``result.json`` (a
:class:`~liqi.backends.jobs.TaskResult`, as the local supervisor does) before it exits with the
task's exit code. The task's output goes to the driver's own stdout, which is the Ray job's
log; the backend copies that log to the task's ``log`` path, where ``liqi job logs`` reads it.

Where the files come from: for now the Ray head runs on the control plane's machine, so
``JOB_DIR`` is the job folder staging filled in (``LIQI_HOME/jobs/<job_id>``) and the driver
reads and writes it in place. On a cluster the driver will be given the job's store address
and a scoped, short-lived key instead: it will fetch the staged folder into a node-local one,
and upload ``result.json``, the logs and the outputs back through the store. Ray's
``runtime_env.working_dir`` upload is not used for this: it goes through the GCS, which limits
its size. Only this module's start (:func:`job_folder`) and end change then.

The task stays in the driver's process group and gets SIGKILL when the driver dies
(``PR_SET_PDEATHSIG``), so a ``ray job stop`` (SIGTERM to the driver and its children, SIGKILL
3 s later) or a lost driver never leaves the task running. SIGTERM is a kill: the task is
stopped and the result says CANCELLED. The plan's ``timeout_s`` and ``memory_mb`` (on the
task's whole process tree) are enforced here as by the local supervisor; ``memory_mb`` is
also what the backend asks Ray to reserve (``entrypoint_memory``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType

from liqi.backends.jobs import LaunchPlan, TaskResult, TaskSpec
from liqi.backends.ray_cluster import PLACEMENT_TIMEOUT_S, ClusterDriver
from liqi.backends.ray_task import die_with, exit_reason, tree_rss
from liqi.training.supervisor import write_result

PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
TICK_S = 0.1
# Ray sends SIGKILL 3 s after SIGTERM (RAY_JOB_STOP_WAIT_TIME_S): stop the task before that.
STOP_GRACE_S = 2.0
MB = 1024 * 1024
USAGE = "usage: python -m liqi.backends.ray_driver JOB_DIR [--placement-timeout-s SECONDS]"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def job_folder(argv: list[str]) -> Path:
    """The staged job folder. Later: fetched from the store into a node-local folder."""
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--placement-timeout-s"):
        raise SystemExit(USAGE)
    return Path(argv[1])


def placement_timeout(argv: list[str]) -> float:
    """How long a several-task job waits for its placement group (the backend's setting)."""
    try:
        return float(argv[3]) if len(argv) == 4 else PLACEMENT_TIMEOUT_S
    except ValueError:
        raise SystemExit(USAGE) from None


class Driver:
    def __init__(self, plan: LaunchPlan) -> None:
        self.plan = plan
        self.cancelled = False
        self.peak_rss = 0
        self.started_at = _now()

    def on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.cancelled = True

    def is_cancelled(self) -> bool:
        """Asked anew each time (set by the signal handler at any moment)."""
        return self.cancelled

    def run(self, task: TaskSpec) -> TaskResult:
        if self.is_cancelled():  # stopped while the driver was starting: never start the task
            return self.result("CANCELLED", "killed on request", None)
        env = {**os.environ, **task.env, "PYTHONUNBUFFERED": "1"}
        sys.stdout.flush()
        proc = subprocess.Popen(
            list(task.argv),
            cwd=task.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sys.stdout.fileno(),
            stderr=subprocess.STDOUT,
            preexec_fn=die_with(os.getpid()),  # not thread-safe; the driver has no threads
        )
        began = time.monotonic()
        limit = self.plan.memory_mb
        while True:
            # A kill first: `ray job stop` signals the task too, which may end before we look.
            if self.is_cancelled():
                return self.stop(proc, "CANCELLED", "killed on request")
            code = proc.poll()
            if code is not None:
                if code == 0:
                    return self.result("SUCCEEDED", "", 0)
                return self.result("FAILED", exit_reason(code), code)
            rss = tree_rss(proc.pid)
            self.peak_rss = max(self.peak_rss, rss)
            if limit is not None and rss > limit * MB:
                reason = (
                    f"memory limit exceeded: the job used {rss // MB} MB, over its limit of "
                    f"{limit} MB (memory_mb)"
                )
                return self.stop(proc, "FAILED", reason)
            timeout = self.plan.timeout_s
            if timeout is not None and time.monotonic() - began > timeout:
                return self.stop(proc, "FAILED", f"timed out after {timeout:g} s (timeout_s)")
            time.sleep(TICK_S)

    def stop(self, proc: subprocess.Popen[bytes], state: str, reason: str) -> TaskResult:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=min(self.plan.grace_s, STOP_GRACE_S))
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        return self.result(state, reason, proc.returncode)

    def result(self, state: str, reason: str, code: int | None) -> TaskResult:
        return TaskResult(
            state=state,
            exit_code=code,
            reason=reason,
            peak_rss_mb=self.peak_rss // MB,
            started_at=self.started_at,
            ended_at=_now(),
            tasks={"chief": code},
        )


def run_cluster(plan: LaunchPlan, driver: Driver, placement_timeout_s: float) -> TaskResult:
    """A several-task plan: this process joins the Ray cluster as a driver and runs the tasks
    as actors in a placement group (:mod:`liqi.backends.ray_cluster`)."""
    import ray

    logging.basicConfig(level=logging.WARNING, format="liqi: %(message)s")
    # Quiet: the log is the tasks' output; the actors' own stdout is not forwarded to it.
    # No ray.shutdown() here: Ray's exit hook does it once the result is written (a kill
    # leaves 3 s for everything).
    ray.init(log_to_driver=False, logging_level=logging.WARNING)
    # ray.init installs its own SIGTERM handler (exit at once): a kill must stop the tasks.
    signal.signal(signal.SIGTERM, driver.on_signal)
    signal.signal(signal.SIGINT, driver.on_signal)
    cluster = ClusterDriver(
        plan, sys.stdout.buffer, driver.is_cancelled, placement_timeout_s=placement_timeout_s
    )
    return cluster.run()


def main(argv: list[str]) -> int:
    job_dir = job_folder(argv)
    plan = LaunchPlan.from_json((job_dir / PLAN_FILE).read_text())
    driver = Driver(plan)
    signal.signal(signal.SIGTERM, driver.on_signal)
    signal.signal(signal.SIGINT, driver.on_signal)
    try:
        if len(plan.tasks) == 1:
            result = driver.run(plan.tasks[0])
        else:
            result = run_cluster(plan, driver, placement_timeout(argv))
    except Exception as exc:  # the job must always end with a result
        result = driver.result("FAILED", f"liqi's Ray driver failed: {exc!r}", None)
    write_result(job_dir, result)
    if result.state == "SUCCEEDED":
        return 0
    code = result.exit_code
    return code if code is not None and 0 < code < 256 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
