"""The Ray Backend: each liqi job is a Ray job, submitted through the Ray Jobs API
(``ray.job_submission.JobSubmissionClient``) at a cluster's dashboard address.

The Ray job's entrypoint is liqi's own driver (:mod:`liqi.backends.ray_driver`), which runs
the plan's tasks and reports how they ended. The job's files do not travel through Ray
(``runtime_env.working_dir`` goes through the GCS, which limits its size) nor need a disk the
nodes share: the control plane ships the staged folder through its store and sets the plan's
``files`` (the control plane's URL and a one-time ticket for the job's workload key); the
driver fetches the folder into its node, and sends the outputs and the result back
(:mod:`liqi.backends.job_files`). A plan without ``files`` (a test's) gives the driver the
job folder's path to use in place.

- **Handle**: ``Handle("ray", "liqi-<job_id>")``, the Ray submission id. The backend keeps
  nothing else (a log-copy timer only), so a new backend object for the same address
  re-attaches to a job from its stored handle.
- **Resources**: a one-task plan: ``entrypoint_num_cpus`` from the plan's ``cpu``,
  ``entrypoint_memory`` from its ``memory_mb``: Ray schedules the driver with them (Ray does
  not enforce memory; the driver enforces ``memory_mb`` and ``timeout_s`` as the local
  supervisor does).
- **Several tasks** (PAI's ``-Dcluster`` ps/worker form): the driver reserves nothing; it
  places one placement group with a bundle per task (strategy the plan's ``placement``,
  ``PACK`` by default) and runs each task in an actor of its own, told the cluster's addresses
  on the actors' nodes (:mod:`liqi.backends.ray_cluster`). A plan bigger than the cluster, or
  not placed within ``placement_timeout_s``, fails with what it asked and what the cluster
  has.
- **States**: Ray's PENDING and RUNNING are running; SUCCEEDED, FAILED and STOPPED end the
  job with the driver's ``result.json`` when it wrote one, else (the driver died, was killed,
  or Ray stopped it first) FAILED or CANCELLED with what Ray says. A submission id Ray does not
  know (the job was deleted, or the head restarted without its state) ends the job as LOST.
- **Logs**: the Ray job's log (the driver's stdout: the task's output) is copied to the task's
  ``log`` file, where ``liqi job logs`` reads it: appended from the length already copied, at
  most every ``log_interval_s`` while the job runs (at every runner tick until its first
  output is there) and once when it ends. With several tasks
  the log's lines are prefixed with their task (``[worker:1] ...``) and split back into each
  task's file (the driver's own lines go to the chief's).
- **Kill**: ``stop_job``; Ray sends SIGTERM to the driver and its task, SIGKILL 3 s later. A
  several-task driver stops every task, kills the actors and removes the placement group
  before that.

Refused: sandboxed plans, with a BackendError (Ray runs every job as the cluster's user:
isolation comes from a separate cluster per resource group, not from liqi's sandbox).
"""

from __future__ import annotations

import logging
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from liqi.backends.jobs import Backend, Handle, LaunchPlan, RunStatus, TaskResult
from liqi.backends.ray_cluster import PLACEMENT_TIMEOUT_S, split_task_output
from liqi.errors import BackendError

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobSubmissionClient

logger = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
RESULT_FILE = "result.json"
MB = 1024 * 1024
RUNNING_STATES = frozenset({"PENDING", "RUNNING"})
# The line Ray writes to a job's log before the entrypoint's own output.
RAY_PREAMBLE = b"Running entrypoint for job "


def submission_id(job_id: str) -> str:
    return f"liqi-{job_id}"


def _iso(epoch_ms: int | None) -> str:
    if not epoch_ms:
        return ""
    return datetime.fromtimestamp(epoch_ms / 1000, timezone.utc).isoformat()


def _first_line(message: str | None) -> str:
    line = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    # "Job entrypoint command failed with exit code 3, last available logs (...):"
    return line.split(", last available logs", 1)[0].rstrip(":. ")


def _user_output(text: str) -> bytes:
    """The Ray job's log from the entrypoint's first line on: Ray writes its own lines
    ("Runtime env is setting up", "Running entrypoint for job ...") before it, and nothing of
    the job's output exists until that last one is there."""
    data = text.encode("utf-8", errors="replace")
    at = data.find(RAY_PREAMBLE)
    while at > 0 and data[at - 1 : at] != b"\n":
        at = data.find(RAY_PREAMBLE, at + 1)
    end = data.find(b"\n", at) if at >= 0 else -1
    return b"" if end < 0 else data[end + 1 :]


def _connect(address: str, timeout_s: float) -> JobSubmissionClient:
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError:
        raise BackendError(
            "The ray backend needs Ray's Jobs API: pip install 'liqi[ray]' "
            "(ray[default], with the dashboard)."
        ) from None

    class BoundedClient(JobSubmissionClient):  # type: ignore[misc, unused-ignore]
        """Every request with a timeout (the SDK sends none: a hung dashboard would hang the
        job runner's loop)."""

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

    try:
        client: JobSubmissionClient = BoundedClient(address)
    except (OSError, RuntimeError) as exc:
        raise BackendError(
            f"Cannot reach the Ray cluster at {address}: {str(exc).rstrip('.')}. Is a Ray head "
            "running there with its dashboard (ray start --head --include-dashboard=true)?"
        ) from None
    return client


class RayJobBackend(Backend):
    """Runs LaunchPlans as Ray jobs on the cluster whose dashboard is at ``address``
    (``http://127.0.0.1:8265``). Thread-safe."""

    name = "ray"
    sandboxes = False
    remote_files = True

    def __init__(
        self,
        address: str,
        *,
        request_timeout_s: float = 10.0,
        log_interval_s: float = 1.0,
        python: str = sys.executable,
        placement_timeout_s: float = PLACEMENT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = address
        self.placement_timeout_s = placement_timeout_s
        self.request_timeout_s = request_timeout_s
        self.log_interval_s = log_interval_s
        self.python = python
        self.clock = clock
        self._client: JobSubmissionClient | None = None
        self._lock = threading.Lock()
        self._logs_copied_at: dict[str, float] = {}
        self._has_output: set[str] = set()  # jobs whose first output was copied

    def client(self) -> JobSubmissionClient:
        with self._lock:
            if self._client is None:
                self._client = _connect(self.address, self.request_timeout_s)
            return self._client

    def _forget_client(self) -> None:
        with self._lock:
            self._client = None

    def launch(self, plan: LaunchPlan) -> Handle:
        if plan.sandbox is not None:
            raise BackendError(
                f"Job {plan.job_id} asks for liqi's sandbox, which the ray backend does not "
                "provide: Ray runs every job as the cluster's user. Isolate projects with a "
                "separate Ray cluster per resource group."
            )
        job_dir = Path(plan.job_dir)
        (job_dir / PLAN_FILE).write_text(replace(plan, files=None).to_json())
        (job_dir / RESULT_FILE).unlink(missing_ok=True)
        ref = submission_id(plan.job_id)
        driver = [self.python, "-m", "liqi.backends.ray_driver"]
        if plan.files is None:  # a node that shares this machine's disk: the folder in place
            driver.append(str(job_dir))
        else:  # the ticket is seen by all who can list the cluster's jobs, and used once
            files = plan.files
            # "--x=value": a ticket may start with "-"
            driver += [f"--endpoint={files['endpoint']}", f"--job-id={plan.job_id}"]
            driver.append(f"--ticket={files['ticket']}")
        options: dict[str, Any] = {"submission_id": ref}
        if len(plan.tasks) == 1:
            options["metadata"] = {"liqi_job_id": plan.job_id, "liqi_task": plan.tasks[0].name}
            options["entrypoint_num_cpus"] = plan.cpu
            if plan.memory_mb is not None:
                options["entrypoint_memory"] = plan.memory_mb * MB
        else:
            # The driver only coordinates: the tasks' resources are their placement group's.
            names = ",".join(t.name for t in plan.tasks)
            options["metadata"] = {"liqi_job_id": plan.job_id, "liqi_tasks": names}
            driver += ["--placement-timeout-s", f"{self.placement_timeout_s:g}"]
        options["entrypoint"] = shlex.join(driver)
        client = self.client()
        try:
            client.submit_job(**options)
        except (OSError, RuntimeError, ValueError) as exc:
            if "already exists" in str(exc):
                self._stop_stale(ref)
                raise BackendError(
                    f"The Ray cluster at {self.address} already had a Ray job {ref} from an "
                    "earlier start of this job (the control plane stopped before recording "
                    "it); it was stopped so that nothing runs unknown to liqi. Submit the job "
                    "again."
                ) from None
            self._forget_client()
            raise BackendError(
                f"Cannot submit job {plan.job_id} to the Ray cluster at {self.address}: {exc}"
            ) from None
        logger.info("job_id=%s submitted to Ray at %s as %s", plan.job_id, self.address, ref)
        return Handle(backend=self.name, ref=ref)

    def _stop_stale(self, ref: str) -> None:
        """A Ray job of this id exists from an earlier launch whose handle was never stored
        (the control plane stopped in between): stop it, so nothing runs unknown to liqi."""
        logger.warning("ray job %s already existed; stopping it", ref)
        try:
            self.client().stop_job(ref)
        except (OSError, RuntimeError) as exc:
            logger.warning("cannot stop the stale Ray job %s: %s", ref, exc)

    def status(self, handle: Handle, job_dir: Path) -> RunStatus:
        try:
            info = self.client().get_job_info(handle.ref)
        except BackendError as exc:
            logger.warning("ray job %s: %s", handle.ref, exc)
            return RunStatus(running=True, detail=str(exc))
        except RuntimeError as exc:
            if "does not exist" not in str(exc):
                logger.warning("ray job %s: cannot get its status: %s", handle.ref, exc)
                return RunStatus(running=True, detail=str(exc))
            self._logs_copied_at.pop(handle.ref, None)
            return RunStatus(
                running=False,
                detail=f"the Ray cluster at {self.address} does not know the Ray job "
                f"{handle.ref} (it was deleted, or the head restarted without its state)",
            )
        except OSError as exc:
            self._forget_client()
            logger.warning("ray job %s: cannot reach %s: %s", handle.ref, self.address, exc)
            return RunStatus(running=True, detail=f"cannot reach {self.address}: {exc}")
        state = str(info.status.value)
        if state in RUNNING_STATES:
            self._copy_logs(handle.ref, job_dir, final=False)
            return RunStatus(running=True)
        self._copy_logs(handle.ref, job_dir, final=True)
        result = TaskResult.read(job_dir / RESULT_FILE)
        if result is not None:
            return RunStatus(running=False, result=result)
        return RunStatus(running=False, result=_result_from_ray(info, state))

    def cancel(self, handle: Handle) -> None:
        try:
            self.client().stop_job(handle.ref)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return
            raise BackendError(f"Cannot stop Ray job {handle.ref}: {exc}") from None
        except OSError as exc:
            self._forget_client()
            raise BackendError(
                f"Cannot stop Ray job {handle.ref}: {self.address} is unreachable: {exc}"
            ) from None

    def _copy_logs(self, ref: str, job_dir: Path, *, final: bool) -> None:
        """Append what the Ray job's log has beyond what the task's log file holds: at every
        call until the job's first output is there (a user waits for that first line), then
        at most every ``log_interval_s``."""
        now = self.clock()
        waited = now - self._logs_copied_at.get(ref, -1e18)
        if not final and ref in self._has_output and waited < self.log_interval_s:
            return
        self._logs_copied_at[ref] = now
        if final:
            self._logs_copied_at.pop(ref, None)
            self._has_output.discard(ref)
        try:
            plan = LaunchPlan.from_json((job_dir / PLAN_FILE).read_text())
            data = _user_output(self.client().get_job_logs(ref))
            if data and not final:
                self._has_output.add(ref)
            if len(plan.tasks) == 1:
                _append_new(Path(plan.tasks[0].log), data)
            else:
                parts = split_task_output(data, [t.name for t in plan.tasks])
                for task in plan.tasks:
                    _append_new(Path(task.log), parts[task.name])
        except (OSError, ValueError, RuntimeError, BackendError) as exc:
            logger.warning("ray job %s: cannot copy its log: %s", ref, exc)


def _append_new(log: Path, data: bytes) -> None:
    """Append what ``data`` (a task's whole output so far) has beyond the log's length."""
    have = log.stat().st_size if log.exists() else 0
    if len(data) > have:
        with open(log, "ab") as fh:
            fh.write(data[have:])


def _result_from_ray(info: JobDetails, state: str) -> TaskResult:
    """How the job ended when liqi's driver wrote no result: in Ray's words."""
    code = info.driver_exit_code
    said = _first_line(info.message)
    if state == "SUCCEEDED":
        verdict, reason = "SUCCEEDED", ""
    elif state == "STOPPED":
        verdict, reason = "CANCELLED", "the Ray job was stopped (a kill, or ray job stop)"
    else:
        verdict = "FAILED"
        reason = f"liqi's driver on Ray ended without a result: {said or 'no message from Ray'}"
    return TaskResult(
        state=verdict,
        exit_code=code,
        reason=reason,
        peak_rss_mb=0,
        started_at=_iso(info.start_time),
        ended_at=_iso(info.end_time),
        tasks={"chief": code},
    )
