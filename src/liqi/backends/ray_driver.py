"""The driver of a liqi job on Ray, the entrypoint of the Ray job that
:class:`liqi.backends.ray_jobs.RayJobBackend` submits::

    python -m liqi.backends.ray_driver --endpoint URL --job-id ID --ticket TICKET
    python -m liqi.backends.ray_driver JOB_DIR

With a ticket (what the control plane sends), the job's files come through liqi's store and
the node needs no disk in common with the control plane: the driver trades the ticket for the
job's workload key, fetches the staged folder into a node-local one, runs the plan there,
sends back what the tasks wrote under ``buckets/`` when they succeeded, then the result, and
removes the folder (:mod:`liqi.backends.job_files`). With ``JOB_DIR`` (a node that shares the
control plane's disk; tests) it reads the plan from the folder and writes ``result.json``
there in place.

It runs the plan's one task with the task's argv, environment and working folder (a plan of
several tasks, PAI's ``-Dcluster``, is run by :class:`liqi.backends.ray_cluster.ClusterDriver`
instead: a placement group, an actor per task, each fetching its own copy of the files; the
chief's outputs are the job's), and ends with the task's exit code. The task's output goes to
the driver's own stdout, which is the Ray job's log; the backend copies that log to the task's
``log`` path, where ``liqi job logs`` reads it.

The task stays in the driver's process group and gets SIGKILL when the driver dies
(``PR_SET_PDEATHSIG``), so a ``ray job stop`` (SIGTERM to the driver and its children, SIGKILL
3 s later) or a lost driver never leaves the task running. SIGTERM is a kill: the task is
stopped and the result says CANCELLED. The plan's ``timeout_s`` and ``memory_mb`` (on the
task's whole process tree) are enforced here as by the local supervisor; ``memory_mb`` is
also what the backend asks Ray to reserve (``entrypoint_memory``).
"""

from __future__ import annotations

import argparse
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

from liqi.backends import job_files
from liqi.backends.job_files import JobFilesClient
from liqi.backends.jobs import LaunchPlan, TaskResult, TaskSpec
from liqi.backends.ray_cluster import PLACEMENT_TIMEOUT_S, ClusterDriver
from liqi.backends.ray_task import die_with, exit_reason, tree_rss
from liqi.errors import BackendError, LiqiError
from liqi.training.supervisor import write_result

PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
TICK_S = 0.1
# Ray sends SIGKILL 3 s after SIGTERM (RAY_JOB_STOP_WAIT_TIME_S): stop the task before that.
STOP_GRACE_S = 2.0
MB = 1024 * 1024


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m liqi.backends.ray_driver",
        description="Run a liqi job's plan on Ray (the entrypoint liqi submits).",
    )
    parser.add_argument("job_dir", nargs="?", help="a job folder shared with the control plane")
    parser.add_argument("--endpoint", help="the control plane's URL, to fetch the job's files")
    parser.add_argument("--job-id", help="the job whose files to fetch")
    parser.add_argument("--ticket", help="the one-time ticket for the job's key")
    parser.add_argument("--placement-timeout-s", type=float, default=PLACEMENT_TIMEOUT_S)
    args = parser.parse_args(argv[1:])
    fetched = (args.endpoint, args.job_id, args.ticket)
    if (args.job_dir is None) == (None in fetched) or (args.job_dir and any(fetched)):
        parser.error("give JOB_DIR, or --endpoint, --job-id and --ticket")
    return args


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


def run_cluster(
    plan: LaunchPlan,
    driver: Driver,
    placement_timeout_s: float,
    files: JobFilesClient | None,
) -> TaskResult:
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
        plan,
        sys.stdout.buffer,
        driver.is_cancelled,
        placement_timeout_s=placement_timeout_s,
        files=files.credentials() if files else None,
    )
    return cluster.run()


def run(
    plan: LaunchPlan, driver: Driver, args: argparse.Namespace, files: JobFilesClient | None
) -> TaskResult:
    """Run the plan; a result whatever happens."""
    try:
        if len(plan.tasks) == 1:
            before = job_files.snapshot(Path(plan.job_dir)) if files else {}
            result = driver.run(plan.tasks[0])
            if files is not None and result.state == "SUCCEEDED":
                folder = Path(plan.job_dir)
                files.send_outputs(folder, job_files.changed(folder, before))
            return result
        return run_cluster(plan, driver, args.placement_timeout_s, files)
    except Exception as exc:  # the job must always end with a result
        return driver.result("FAILED", f"liqi's Ray driver failed: {exc}", None)


def _exit_code(result: TaskResult) -> int:
    if result.state == "SUCCEEDED":
        return 0
    code = result.exit_code
    return code if code is not None and 0 < code < 256 else 1


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.job_dir is not None:  # in place
        job_dir = Path(args.job_dir)
        plan = LaunchPlan.from_json((job_dir / PLAN_FILE).read_text())
        driver = _driver(plan)
        result = run(plan, driver, args, None)
        write_result(job_dir, result)
        return _exit_code(result)
    # A kill before the tasks start: exit, removing what was fetched (the finally below).
    signal.signal(signal.SIGTERM, lambda _s, _f: sys.exit(128 + signal.SIGTERM))
    try:
        files = JobFilesClient.claim(args.endpoint, args.job_id, args.ticket)
    except BackendError as exc:
        _say(f"liqi: {exc}")
        return 1
    folder = job_files.node_folder(args.job_id)
    try:
        try:
            plan = files.fetch(folder / "job")
            result = run(plan, _driver(plan), args, files)
        except (BackendError, LiqiError, OSError) as exc:
            now = _now()
            reason = f"liqi's Ray driver could not fetch the job's files: {exc}"
            result = TaskResult("FAILED", None, reason, 0, now, now)
        if result.state == "FAILED" and result.reason.startswith("liqi's Ray driver"):
            _say(f"liqi: {result.reason}")
        try:
            files.send_result(result)
        except BackendError as exc:
            _say(f"liqi: {exc}")
            return 1
        return _exit_code(result)
    finally:
        files.close()
        job_files.remove(folder)


def _driver(plan: LaunchPlan) -> Driver:
    driver = Driver(plan)
    signal.signal(signal.SIGTERM, driver.on_signal)
    signal.signal(signal.SIGINT, driver.on_signal)
    return driver


def _say(line: str) -> None:
    """A line in the Ray job's log (the job's log in liqi)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
