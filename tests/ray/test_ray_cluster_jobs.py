"""PAI ``-Dcluster`` jobs on a Ray resource group: a placement group with a bundle per task, a
Ray actor per task running the unchanged script, the TF examples trained as they are locally.

The TF examples go through the whole control plane (``liqi pai`` on a server whose default
group is the Ray head) and are checked with the local tests' own assertions; the rest drives
:class:`RayJobBackend` with small several-task plans.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from liqi.backends.jobs import LaunchPlan, TaskSpec
from liqi.backends.ray_jobs import RayJobBackend, submission_id
from tests.jobs.test_distributed_tf import (
    run_tf1_between_graph_job,
    run_tf2_multi_worker_mirrored_job,
)
from tests.ray.test_ray_jobs import assert_nothing_left, processes_of, wait_for_end
from tests.support.ray_head import RayHead
from tests.support.servers import LiveServer, live_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

# Each task says who it is and where the cluster is, then holds until released (or exits 1
# when it is the task FAIL names, once the others have started).
HELD_TASK = """
    import json, os, sys, time
    config = json.loads(os.environ["TF_CONFIG"])
    name = f"{config['task']['type']}-{config['task']['index']}"
    print(f"{name} (pid {os.getpid()}) in {json.dumps(config['cluster'])}", flush=True)
    print(" ".join(a for a in sys.argv[1:] if not a.startswith("--volumes")), flush=True)
    open(name + ".started", "w").close()  # the tasks share their working folder
    others = [n for n in os.environ["ALL_TASKS"].split(",") if n != name]
    deadline = time.monotonic() + 120
    while not os.path.exists("release") and time.monotonic() < deadline:
        if name == os.environ.get("FAIL") and all(os.path.exists(f"{n}.started") for n in others):
            print(f"{name} gives up", flush=True)
            sys.exit(1)
        time.sleep(0.05)
    print(f"{name} released", flush=True)
"""


def cluster_plan(
    root: Path,
    *,
    workers: int,
    ps: int,
    cpu: float = 1.0,
    ps_shape: tuple[float | None, int | None] = (None, None),
    env: dict[str, str] | None = None,
) -> LaunchPlan:
    """A staged several-task job laid out as staging lays it out, tasks running HELD_TASK;
    ``ps_shape``: the ps tasks' own CPUs and MB."""
    job_id = f"j{uuid.uuid4().hex[:12]}"
    job_dir = root / job_id
    for name in ("inputs", "work", "logs"):
        (job_dir / name).mkdir(parents=True)
    script = job_dir / "inputs" / "held.py"
    script.write_text(textwrap.dedent(HELD_TASK))
    names = [f"worker:{i}" for i in range(workers)] + [f"ps:{i}" for i in range(ps)]
    all_tasks = ",".join(n.replace(":", "-") for n in names)
    tasks = []
    for name in names:
        argv = (sys.executable, "-m", "liqi.training.launcher", str(script), "--job_name=stale")
        task_env = {"LIQI_JOB_ID": job_id, "LIQI_TASK": name, "ALL_TASKS": all_tasks, **(env or {})}
        log = str(job_dir / "logs" / f"{name.replace(':', '-')}.log")
        is_ps = name.startswith("ps")
        task_cpu, memory_mb = ps_shape if is_ps else (None, None)
        work = str(job_dir / "work")
        tasks.append(TaskSpec(name, argv, task_env, work, log, is_ps, task_cpu, memory_mb))
    return LaunchPlan(job_id=job_id, job_dir=str(job_dir), tasks=tuple(tasks), cpu=cpu)


def started(plan: LaunchPlan) -> bool:
    work = Path(plan.job_dir) / "work"
    return all((work / f"{t.name.replace(':', '-')}.started").exists() for t in plan.tasks)


def task_logs(plan: LaunchPlan) -> dict[str, str]:
    return {t.name: Path(t.log).read_text() if Path(t.log).exists() else "" for t in plan.tasks}


def task_pids(plan: LaunchPlan) -> list[int]:
    pids = []
    for text in task_logs(plan).values():
        first = text.split("(pid ", 1)
        if len(first) == 2:
            pids.append(int(first[1].split(")", 1)[0]))
    return pids


def ray_state(head: RayHead, job_id: str) -> dict[str, str]:
    """What the dashboard's State API (``ray list actors``, ``ray list placement-groups``)
    lists of the job: its live actors and its placement group unless removed, by name."""
    found = {}
    for kind in ("actors", "placement_groups"):
        answer = httpx.get(
            f"{head.dashboard_url}/api/v0/{kind}", params={"limit": 10000}, timeout=30
        )
        answer.raise_for_status()
        for entry in answer.json()["data"]["result"]["result"]:
            name, state = str(entry.get("name") or ""), entry["state"]
            if name.startswith(f"liqi-{job_id}") and state not in ("DEAD", "REMOVED"):
                found[name] = state
    return found


def no_task_survives(pids: list[int]) -> None:
    def gone() -> bool:
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    return False
        return True

    wait_until(gone, f"the task processes {pids} to be gone", timeout_s=30)


@pytest.fixture(scope="module")
def ray_group_server(
    ray_head: RayHead, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A control plane whose default resource group is the Ray head."""
    home = tmp_path_factory.mktemp("ray-cluster") / "home"
    groups = f"ray=ray:{ray_head.dashboard_url}"
    with live_server(
        home, None, isolation="none", resource_groups=groups, resource_group="ray"
    ) as live:
        yield live


@pytest.fixture(scope="module")
def backend(ray_head: RayHead) -> RayJobBackend:
    return RayJobBackend(ray_head.dashboard_url, log_interval_s=0.2, placement_timeout_s=3)


def assert_ran_on_ray(backend: RayJobBackend, head: RayHead, job_id: str, tasks: str) -> None:
    """The job was the Ray job liqi-<job_id>, which succeeded, and left no actor or group."""
    info = backend.client().get_job_info(submission_id(job_id))
    assert (info.status.value, info.metadata) == (
        "SUCCEEDED",
        {"liqi_job_id": job_id, "liqi_tasks": tasks},
    )
    assert ray_state(head, job_id) == {}


@pytest.mark.tf
def test_tf1_between_graph_job_on_ray_trains_and_stops_its_parameter_server(
    ray_group_server: LiveServer, backend: RayJobBackend, ray_head: RayHead
) -> None:
    job_id = run_tf1_between_graph_job(ray_group_server.home, "-DresourceGroup=ray")
    assert_ran_on_ray(backend, ray_head, job_id, "worker:0,worker:1,ps:0")


@pytest.mark.tf
def test_tf2_multi_worker_mirrored_job_on_ray_trains_on_two_workers(
    ray_group_server: LiveServer, backend: RayJobBackend, ray_head: RayHead
) -> None:
    job_id = run_tf2_multi_worker_mirrored_job(ray_group_server.home, "-DresourceGroup=ray")
    assert_ran_on_ray(backend, ray_head, job_id, "worker:0,worker:1")


def test_a_cluster_job_runs_an_actor_per_task_and_a_kill_leaves_nothing(
    backend: RayJobBackend, ray_head: RayHead, tmp_path: Path
) -> None:
    from ray.util.state import list_placement_groups

    plan = cluster_plan(tmp_path, workers=2, ps=1, ps_shape=(0.5, 64))
    handle = backend.launch(plan)
    wait_until(lambda: started(plan), "the three tasks to start", timeout_s=120, interval_s=0.1)
    assert ray_state(ray_head, plan.job_id) == {
        f"liqi-{plan.job_id}": "CREATED",  # the placement group
        f"liqi-{plan.job_id}-worker-0": "ALIVE",
        f"liqi-{plan.job_id}-worker-1": "ALIVE",
        f"liqi-{plan.job_id}-ps-0": "ALIVE",
    }
    # A bundle per task: the workers get the job's cpu, the ps its own CPUs and memory.
    (group,) = list_placement_groups(
        address=ray_head.dashboard_url,
        filters=[("name", "=", f"liqi-{plan.job_id}")],
        detail=True,
        raise_on_missing_output=False,
    )
    assert [b["unit_resources"] for b in group.bundles or []] == [
        {"CPU": 1.0},
        {"CPU": 1.0},
        {"CPU": 0.5, "memory": 64.0 * 1024 * 1024},
    ]

    def copied() -> bool:  # the backend copies the Ray job's log when asked for the status
        return backend.status(handle, Path(plan.job_dir)).running and len(task_pids(plan)) == 3

    wait_until(copied, "the tasks' first lines in their logs", interval_s=0.1)
    logs = task_logs(plan)
    # Every task was told the same cluster, on its node's address, and PAI's flags.
    clusters = {json.dumps(json.loads(text.splitlines()[0].split(" in ", 1)[1])) for text in
                logs.values()}  # fmt: skip
    assert len(clusters) == 1
    cluster = json.loads(clusters.pop())
    assert [len(cluster["worker"]), len(cluster["ps"])] == [2, 1]
    assert logs["worker:1"].splitlines()[1] == (
        f"--ps_hosts={cluster['ps'][0]} --worker_hosts={','.join(cluster['worker'])} "
        "--job_name=worker --task_index=1"
    )
    pids = task_pids(plan)

    # While it holds 2.5 of the head's 8 CPUs, a job of 2 x 3 CPUs fits the cluster but not
    # what is free: its placement group is not ready within the backend's 3 s.
    waiting = cluster_plan(tmp_path, workers=2, ps=0, cpu=3)
    status = wait_for_end(backend, backend.launch(waiting), waiting)
    assert status.result is not None
    assert status.result.state == "FAILED"
    assert status.result.reason.startswith(
        "the Ray cluster did not place the job's 2 tasks (worker:0 3 CPU, worker:1 3 CPU; "
        "placement PACK) within 3 s: it has 5.5 CPU and "
    ), status.result.reason

    backend.cancel(handle)
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "CANCELLED", status.result.reason
    assert set(status.result.tasks) == {"worker:0", "worker:1", "ps:0"}
    assert "released" not in "".join(task_logs(plan).values())
    no_task_survives(pids)
    assert_nothing_left(plan)
    assert ray_state(ray_head, plan.job_id) == {}


def test_a_failing_worker_fails_the_cluster_job_and_stops_the_others(
    backend: RayJobBackend, ray_head: RayHead, tmp_path: Path
) -> None:
    plan = cluster_plan(tmp_path, workers=2, ps=1, env={"FAIL": "worker-1"})
    handle = backend.launch(replace(plan, placement="SPREAD"))  # one node: all on it
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "FAILED"
    assert status.result.reason == "task worker:1 exited with code 1: worker-1 gives up"
    assert status.result.tasks["worker:1"] == 1
    logs = task_logs(plan)
    assert "worker-1 gives up\n" in logs["worker:1"]
    assert logs["ps:0"].startswith("ps-0 (pid ")
    no_task_survives(task_pids(plan))
    assert_nothing_left(plan)
    assert ray_state(ray_head, plan.job_id) == {}


def test_a_cluster_job_bigger_than_the_cluster_fails_with_the_reason(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    plan = cluster_plan(tmp_path, workers=2, ps=0, cpu=6)  # the head has 8 CPUs
    status = wait_for_end(backend, backend.launch(plan), plan)
    assert status.result is not None
    assert status.result.state == "FAILED"
    reason = status.result.reason
    assert reason.startswith(
        "the job does not fit the Ray cluster: its 2 tasks ask for 12 CPU in all "
        "(worker:0 6 CPU, worker:1 6 CPU), and the whole cluster has 8 CPU and "
    ), reason
    assert task_logs(plan)["worker:0"].endswith(f"liqi: {reason}\n")


def test_a_cluster_job_whose_driver_is_killed_outright_leaves_nothing(
    backend: RayJobBackend, ray_head: RayHead, tmp_path: Path
) -> None:
    plan = cluster_plan(tmp_path, workers=2, ps=0)
    handle = backend.launch(plan)

    def running() -> bool:
        return backend.status(handle, Path(plan.job_dir)).running and len(task_pids(plan)) == 2

    wait_until(running, "the two tasks to start", timeout_s=120, interval_s=0.1)
    pids = task_pids(plan)
    drivers = [p for p in processes_of(plan) if "liqi.backends.ray_driver" in p.cmdline()]
    assert len(drivers) == 1
    drivers[0].send_signal(signal.SIGKILL)  # no SIGTERM, no clean-up of its own
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "FAILED"
    assert status.result.reason.startswith("liqi's driver on Ray ended without a result: ")
    # Ray kills the actors of a dead driver; each task dies with its actor.
    no_task_survives(pids)
    assert_nothing_left(plan)
    wait_until(lambda: ray_state(ray_head, plan.job_id) == {}, "the actors and group to be gone")
