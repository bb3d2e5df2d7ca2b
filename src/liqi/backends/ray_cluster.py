"""A job of several tasks (PAI's ``-Dcluster`` ps/worker form) run by liqi's Ray driver.

:class:`ClusterDriver` runs in the driver of the job's Ray job (:mod:`liqi.backends.ray_driver`):

1. **Fit.** The plan's tasks are one placement-group bundle each: ``CPU`` the task's ``cpu``
   (else the plan's), ``memory`` the task's ``memory_mb`` when it has one. When their sum is
   more than the whole cluster has (``ray.cluster_resources()``) the job fails at once, naming
   both.
2. **Placement.** One placement group for the job, ``liqi-<job_id>``, strategy the plan's
   ``placement``: ``PACK`` (the default: as few nodes as possible) or ``SPREAD`` (as many).
   Both are best-effort in Ray: a group that cannot be packed onto one node is spread, and
   the reverse. A group not ready within ``placement_timeout_s`` (the cluster is busy, or no
   node is big enough for a task) fails the job with what was asked and what is free.
3. **Addresses.** One actor per task (:class:`~liqi.backends.ray_task.TaskActor`, named
   ``liqi-<job_id>-<role>-<index>``) in its bundle. Each picks its node's IP and a port free
   there; once all have answered, every task is told the whole cluster (``TF_CONFIG`` and
   ``--ps_hosts --worker_hosts --job_name --task_index``, :mod:`liqi.core.tf_cluster`) and
   started with its argv, environment and working folder: the script is unchanged.
4. **Run.** The driver reads every task's output and writes it to its own stdout (the Ray
   job's log) line by line, each line prefixed with ``[<task>] `` (:func:`prefixed`); the
   backend splits that log back into the tasks' log files (:func:`split_task_output`), so
   ``liqi job logs --task worker:1`` shows what it shows for a local job. A line still
   unfinished when its task ends gets a newline. The job ends as a local one does: FAILED
   when a worker fails or a ps ends first, SUCCEEDED when every worker has exited 0; the ps
   tasks (TF1 ps tasks block in ``server.join()``) are then stopped. ``timeout_s`` and
   ``memory_mb`` (summed over every task's process tree) are enforced as locally.
5. **End.** However it ends (a kill too: SIGTERM to the driver), every task's process group
   gets SIGTERM then SIGKILL, the actors are killed and the placement group removed. A driver
   killed outright takes its actors and placement group with it (Ray's ownership) and the
   tasks die with their actors (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import importlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO

from liqi.backends.job_files import relocate_task
from liqi.backends.jobs import LaunchPlan, TaskResult, TaskSpec
from liqi.backends.ray_task import TaskActor, TaskAddress, TaskPoll, exit_reason
from liqi.core.tf_cluster import ClusterHosts, addressed, task_role
from liqi.logs.reading import last_error_in

MB = 1024 * 1024
TICK_S = 0.2
PLACEMENT_TIMEOUT_S = 60.0
# Starting a Ray worker process per actor: seconds each on a busy machine.
ACTORS_TIMEOUT_S = 120.0
CALL_TIMEOUT_S = 30.0
FILES_TIMEOUT_S = 600.0  # fetching the job's files on a node, or sending its outputs
# Ray sends SIGKILL 3 s after SIGTERM (RAY_JOB_STOP_WAIT_TIME_S): a kill stops within that.
KILL_GRACE_S = 1.0
PLACEMENTS = ("PACK", "SPREAD")
# A line longer than this is written in pieces.
LINE_MAX_BYTES = 64 * 1024
TAIL_BYTES = 16 * 1024


class ClusterStoppedError(Exception):
    """The driver was asked to stop (SIGTERM) while it waited."""


class ClusterFailedError(Exception):
    """The job cannot run on this cluster; the message is the result's reason."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


# --- the log form ------------------------------------------------------------------------------


def prefixed(task: str, line: bytes) -> bytes:
    """A task's output line as the driver writes it to the Ray job's log."""
    return b"[" + task.encode() + b"] " + line


def split_task_output(data: bytes, tasks: Sequence[str]) -> dict[str, bytes]:
    """The Ray job's log of a several-task job, split back into each task's output.

    Lines prefixed with a task of ``tasks`` go to it, without the prefix; other lines (the
    driver's own) go to the first task, the chief. An unfinished last line is left for later.
    """
    parts: dict[str, bytearray] = {name: bytearray() for name in tasks}
    pattern = re.compile(rb"^\[(" + b"|".join(re.escape(t.encode()) for t in tasks) + rb")\] ")
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        found = pattern.match(line)
        if found:
            parts[found.group(1).decode()] += line[found.end() :]
        else:
            parts[tasks[0]] += line
    return {name: bytes(part) for name, part in parts.items()}


class TaskOutput:
    """One task's output on its way to the driver's stdout: whole lines, prefixed."""

    def __init__(self, task: str, out: BinaryIO) -> None:
        self.task = task
        self.out = out
        self.pending = b""
        self.tail = b""

    def write(self, data: bytes) -> None:
        self.tail = (self.tail + data)[-TAIL_BYTES:]
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        while len(self.pending) > LINE_MAX_BYTES:
            lines.append(self.pending[:LINE_MAX_BYTES])
            self.pending = self.pending[LINE_MAX_BYTES:]
        if lines:
            self.out.write(b"".join(prefixed(self.task, line + b"\n") for line in lines))
            self.out.flush()

    def close(self) -> None:
        if self.pending:
            self.out.write(prefixed(self.task, self.pending + b"\n"))
            self.out.flush()
            self.pending = b""

    def last_error(self) -> str:
        return last_error_in(self.tail.decode("utf-8", errors="replace"))


# --- pure decisions ----------------------------------------------------------------------------


def task_cpu(plan: LaunchPlan, task: TaskSpec) -> float:
    return task.cpu if task.cpu is not None else plan.cpu


def bundles(plan: LaunchPlan) -> list[dict[str, float]]:
    """One placement-group bundle per task: its CPUs, and its memory when it has a figure."""
    found = []
    for task in plan.tasks:
        bundle = {"CPU": task_cpu(plan, task)}
        if task.memory_mb is not None:
            bundle["memory"] = float(task.memory_mb * MB)
        found.append(bundle)
    return found


def _asked(plan: LaunchPlan) -> str:
    parts = []
    for task in plan.tasks:
        memory = f" {task.memory_mb} MB" if task.memory_mb is not None else ""
        parts.append(f"{task.name} {task_cpu(plan, task):g} CPU{memory}")
    return ", ".join(parts)


def fit_problem(plan: LaunchPlan, cluster: Mapping[str, float]) -> str | None:
    """Why the plan's bundles cannot fit ``cluster`` (``ray.cluster_resources()``) even when
    it is idle; None when they can."""
    cpu = sum(task_cpu(plan, t) for t in plan.tasks)
    memory_mb = sum(t.memory_mb or 0 for t in plan.tasks)
    have_cpu = float(cluster.get("CPU", 0.0))
    have_mb = int(cluster.get("memory", 0.0) // MB)
    if cpu <= have_cpu and memory_mb <= have_mb:
        return None
    asked_memory = f" and {memory_mb} MB of memory" if memory_mb else ""
    return (
        f"the job does not fit the Ray cluster: its {len(plan.tasks)} tasks ask for {cpu:g} "
        f"CPU{asked_memory} in all ({_asked(plan)}), and the whole cluster has {have_cpu:g} "
        f"CPU and {have_mb} MB of memory. Ask for fewer or smaller tasks (-Dcluster, cpu), or "
        "run the job in a bigger resource group."
    )


def verdict(codes: Mapping[str, int | None], ps: frozenset[str]) -> tuple[str, str] | None:
    """``(state, task)`` once the job is over (``task`` the one that decided a failure, else
    ""), None while it runs: as the local supervisor decides."""
    workers = [name for name in codes if name not in ps]
    for name in workers:
        code = codes[name]
        if code is not None and code != 0:
            return "FAILED", name
    if all(codes[name] == 0 for name in workers):
        return "SUCCEEDED", ""
    for name in codes:
        if name in ps and codes[name] is not None:
            return "FAILED", name
    return None


# --- the run -----------------------------------------------------------------------------------


@dataclass
class _Task:
    spec: TaskSpec
    actor: Any
    output: TaskOutput
    offset: int = 0
    code: int | None = None
    ended: bool = False  # exited, and its output read to the end


class ClusterDriver:
    """Runs a several-task plan on the Ray cluster this process is a driver of."""

    def __init__(
        self,
        plan: LaunchPlan,
        out: BinaryIO,
        is_cancelled: Callable[[], bool],
        *,
        placement_timeout_s: float = PLACEMENT_TIMEOUT_S,
        log: logging.Logger | None = None,
        files: dict[str, str] | None = None,
    ) -> None:
        self.plan = plan
        # The job's files through liqi's store (JobFilesClient.credentials): each task's actor
        # fetches its own copy on its node, and the chief's sends the outputs back.
        self.files = files
        self.out = out
        self.is_cancelled = is_cancelled
        self.placement_timeout_s = placement_timeout_s
        self.log = log or logging.getLogger(__name__)
        self.tasks: dict[str, _Task] = {}
        self.group: Any = None
        self.peak_rss = 0
        self.started_at = _now()

    def run(self) -> TaskResult:
        """Place, start and watch the tasks; stop everything; how the job ended."""
        try:
            state, reason = self._run()
        except ClusterStoppedError:
            state, reason = "CANCELLED", "killed on request"
        except ClusterFailedError as failed:
            state, reason = "FAILED", str(failed)
        finally:
            self._tear_down(KILL_GRACE_S if self.is_cancelled() else self.plan.grace_s)
        if state == "FAILED":  # in the Ray job's log too (the chief's, in liqi's)
            self.out.write(f"liqi: {reason}\n".encode())
            self.out.flush()
        return self.result(state, reason)

    def _run(self) -> tuple[str, str]:
        ray: Any = importlib.import_module("ray")

        problem = fit_problem(self.plan, ray.cluster_resources())
        if problem is not None:
            raise ClusterFailedError(problem)
        self._place()
        self._create_actors()
        if self.files is not None:
            self._fetch_files(self.files)
        self._start()
        state, reason = self._watch()
        if state == "SUCCEEDED" and self.files is not None:
            chief = self.tasks[self.plan.tasks[0].name]
            sent = chief.actor.send_outputs.remote()
            self._gather([sent], "sending the chief's outputs", FILES_TIMEOUT_S)
        return state, reason

    def _fetch_files(self, files: dict[str, str]) -> None:
        """Each actor fetches the job's files on its node; its task's paths move there."""
        tasks = list(self.tasks.values())
        calls = [t.actor.fetch.remote(files) for t in tasks]
        folders: list[str] = self._gather(calls, "fetching the job's files", FILES_TIMEOUT_S)
        old = self.plan.job_dir.rstrip("/")
        for task, folder in zip(tasks, folders, strict=True):
            task.spec = relocate_task(task.spec, old, folder)

    def _place(self) -> None:
        from ray.util.placement_group import placement_group

        strategy = self.plan.placement if self.plan.placement in PLACEMENTS else "PACK"
        name = f"liqi-{self.plan.job_id}"
        self.group = placement_group(bundles(self.plan), strategy=strategy, name=name)
        try:
            self._gather(
                [self.group.ready()], "placing", self.placement_timeout_s, late=TimeoutError
            )
        except TimeoutError:
            ray: Any = importlib.import_module("ray")
            free = ray.available_resources()
            raise ClusterFailedError(
                f"the Ray cluster did not place the job's {len(self.plan.tasks)} tasks "
                f"({_asked(self.plan)}; placement {strategy}) within "
                f"{self.placement_timeout_s:g} s: it has {free.get('CPU', 0.0):g} CPU and "
                f"{int(free.get('memory', 0.0) // MB)} MB of memory free now. Other jobs hold "
                "the rest, or no node is big enough for one task; try again later, or ask for "
                "smaller tasks."
            ) from None

    def _create_actors(self) -> None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        import ray

        remote: Any = ray.remote(TaskActor)
        for index, (spec, bundle) in enumerate(
            zip(self.plan.tasks, bundles(self.plan), strict=True)
        ):
            strategy = PlacementGroupSchedulingStrategy(self.group, index)
            options: dict[str, Any] = {
                "name": f"liqi-{self.plan.job_id}-{spec.name.replace(':', '-')}",
                "num_cpus": bundle["CPU"],
                "scheduling_strategy": strategy,
                "max_restarts": 0,
            }
            if "memory" in bundle:
                options["memory"] = bundle["memory"]
            actor = remote.options(**options).remote(self.plan.job_id, spec.name)
            self.tasks[spec.name] = _Task(spec, actor, TaskOutput(spec.name, self.out))

    def _start(self) -> None:
        tasks = list(self.tasks.values())
        found: list[TaskAddress] = self._gather(
            [t.actor.address.remote() for t in tasks], "starting the task actors", ACTORS_TIMEOUT_S
        )
        where = dict(zip(self.tasks, found, strict=True))
        by_role: dict[str, list[tuple[int, str]]] = {"ps": [], "worker": []}
        for name, address in where.items():
            role, index = task_role(name)
            by_role[role].append((index, address.hostport))
        hosts = ClusterHosts(
            ps=tuple(h for _, h in sorted(by_role["ps"])),
            worker=tuple(h for _, h in sorted(by_role["worker"])),
        )
        self.log.info("job_id=%s cluster %s", self.plan.job_id, hosts.spec())
        starts = []
        for task in tasks:
            argv, env = addressed(task.spec.argv, task.spec.env, hosts, task.spec.name)
            starts.append(task.actor.start.remote(argv, env, task.spec.cwd))
        self._gather(starts, "starting the tasks", CALL_TIMEOUT_S)

    def _watch(self) -> tuple[str, str]:
        began = time.monotonic()
        limit = self.plan.memory_mb
        ps = frozenset(t.spec.name for t in self.tasks.values() if t.spec.is_ps)
        while True:
            if self.is_cancelled():
                raise ClusterStoppedError
            rss = self._poll()
            self.peak_rss = max(self.peak_rss, rss)
            codes = {name: t.code if t.ended else None for name, t in self.tasks.items()}
            decided = verdict(codes, ps)
            if decided is not None:
                state, name = decided
                return state, self._reason(name, ps) if name else ""
            if limit is not None and rss > limit * MB:
                return "FAILED", (
                    f"memory limit exceeded: the job used {rss // MB} MB, over its limit of "
                    f"{limit} MB (memory_mb)"
                )
            timeout = self.plan.timeout_s
            if timeout is not None and time.monotonic() - began > timeout:
                return "FAILED", f"timed out after {timeout:g} s (timeout_s)"
            time.sleep(TICK_S)

    def _reason(self, name: str, ps: frozenset[str]) -> str:
        task = self.tasks[name]
        code = task.code if task.code is not None else -1
        reason = exit_reason(code, f"task {name}")
        error = task.output.last_error() if code > 0 else ""
        if error:
            reason = f"{reason}: {error}"
        return reason + (" before the workers finished" if name in ps else "")

    def _poll(self, *, stoppable: bool = True) -> int:
        """Read every running task's state and new output; their summed RSS."""
        watched = [t for t in self.tasks.values() if not t.ended]
        if not watched:
            return 0
        refs = [t.actor.poll.remote(t.offset) for t in watched]
        polls: list[TaskPoll] = self._gather(
            refs, "reading the tasks", CALL_TIMEOUT_S, stoppable=stoppable
        )
        for task, poll in zip(watched, polls, strict=True):
            task.output.write(poll.output)
            task.offset += len(poll.output)
            if poll.code is not None and not poll.output:
                task.code, task.ended = poll.code, True
                task.output.close()
        return sum(p.rss_bytes for p in polls)

    def _gather(
        self,
        refs: list[Any],
        what: str,
        timeout_s: float,
        *,
        stoppable: bool = True,
        late: type[Exception] = ClusterFailedError,
    ) -> list[Any]:
        """``ray.get(refs)`` in ticks: ClusterStoppedError on a kill (when ``stoppable``),
        ``late`` past ``timeout_s``, ClusterFailedError when an actor died."""
        import ray

        deadline = time.monotonic() + timeout_s
        while True:
            if stoppable and self.is_cancelled():
                raise ClusterStoppedError
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=TICK_S)
            if len(ready) == len(refs):
                break
            if time.monotonic() > deadline:
                raise late(f"{what} on Ray took over {timeout_s:g} s")
        try:
            return list(ray.get(refs, timeout=CALL_TIMEOUT_S))
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise ClusterFailedError(f"{what} on Ray failed: {first}") from None

    def _tear_down(self, grace_s: float) -> None:
        """Stop every task's processes, read what they wrote last, kill the actors, remove the
        placement group. Never raises: the result must be written."""
        from ray.util.placement_group import remove_placement_group

        import ray

        actors = [t.actor for t in self.tasks.values()]
        for step in ("stop", "drain", "close"):
            try:
                if step == "drain":
                    self._drain()
                elif actors:
                    calls = [
                        a.stop.remote(grace_s) if step == "stop" else a.close.remote()
                        for a in actors
                    ]
                    ray.wait(calls, num_returns=len(calls), timeout=grace_s + 5)
            except Exception as exc:  # an actor already gone: nothing of it to stop
                self.log.warning("job_id=%s tearing down (%s): %r", self.plan.job_id, step, exc)
        for task in self.tasks.values():
            try:
                ray.kill(task.actor, no_restart=True)
            except Exception as exc:
                self.log.warning("job_id=%s cannot kill %s: %r", self.plan.job_id, task, exc)
            task.output.close()
        if self.group is not None:
            try:
                remove_placement_group(self.group)
            except Exception as exc:
                self.log.warning("job_id=%s placement group: %r", self.plan.job_id, exc)

    def _drain(self) -> None:
        """The output the stopped tasks wrote since the last poll."""
        for _ in range(8):
            if all(t.ended for t in self.tasks.values()):
                return
            try:
                self._poll(stoppable=False)
            except ClusterFailedError:
                return

    def result(self, state: str, reason: str) -> TaskResult:
        codes = {name: task.code for name, task in self.tasks.items()}
        if not codes:
            codes = {task.name: None for task in self.plan.tasks}
        chief = self.plan.tasks[0].name
        return TaskResult(
            state=state,
            exit_code=codes.get(chief),
            reason=reason,
            peak_rss_mb=self.peak_rss // MB,
            started_at=self.started_at,
            ended_at=_now(),
            tasks=codes,
        )
