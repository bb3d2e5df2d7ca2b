"""Several-task (``-Dcluster``) plans without a cluster: the addresses tasks are told, the
resources and placement from ``-Dcluster`` to the plan, and the Ray driver's pure decisions
(fit, verdict, the prefixed log form and its split)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from liqi.backends.jobs import LaunchPlan, TaskSpec
from liqi.backends.ray_cluster import (
    TaskOutput,
    bundles,
    fit_problem,
    split_task_output,
    verdict,
)
from liqi.cli.pai import cluster_options
from liqi.control.jobs.staging import build_plan
from liqi.core.jobs import ClusterShape, JobSpec
from liqi.core.pai_command import ClusterSpec, parse_cluster
from liqi.core.tf_cluster import ClusterHosts, addressed, task_role
from liqi.errors import InvalidRequestError

GIB = 1024**3
HOSTS = ClusterHosts(ps=("10.0.0.1:2222",), worker=("10.0.0.2:2222", "10.0.0.3:2223"))


def test_a_task_is_told_the_cluster_in_both_forms_and_its_old_flags_are_replaced() -> None:
    argv = ("python", "s.py", "--lr=0.1", "--ps_hosts=127.0.0.1:1", "--job_name=worker")
    new_argv, env = addressed(argv, {"A": "1", "TF_CONFIG": "old"}, HOSTS, "worker:1")
    assert new_argv == (
        "python", "s.py", "--lr=0.1", "--ps_hosts=10.0.0.1:2222",
        "--worker_hosts=10.0.0.2:2222,10.0.0.3:2223", "--job_name=worker", "--task_index=1",
    )  # fmt: skip
    assert env["A"] == "1"
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": ["10.0.0.2:2222", "10.0.0.3:2223"], "ps": ["10.0.0.1:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    workers_only = ClusterHosts(ps=(), worker=("h:1",))
    _, env = addressed(("p",), {}, workers_only, "worker:0")
    assert json.loads(env["TF_CONFIG"])["cluster"] == {"worker": ["h:1"]}
    assert task_role("ps:3") == ("ps", 3)
    with pytest.raises(ValueError, match="'chief' is not named ps:<n> or worker:<n>"):
        task_role("chief")


def test_cluster_resources_and_placement_go_from_dcluster_to_the_plan(tmp_path: Path) -> None:
    parsed = parse_cluster(
        '{"ps":{"count":1,"cpu":50,"memory":300},"worker":{"count":2,"cpu":200},'
        '"placement":"SPREAD"}'
    )
    assert parsed == ClusterSpec(1, 2, ps_cpu=50, ps_memory_mb=300, worker_cpu=200,
                                 placement="SPREAD")  # fmt: skip
    options = cluster_options(parsed)
    assert options == {"ps": 1, "workers": 2, "ps_cpu": 0.5, "ps_memory_mb": 300,
                       "worker_cpu": 2.0, "placement": "SPREAD"}  # fmt: skip
    spec = JobSpec(name="j", project="p", script="s.py", cluster=ClusterShape(**options))
    script = tmp_path / "s.py"
    plan = build_plan("j1", spec, tmp_path, script, {}, [], None)
    assert plan.placement == "SPREAD"
    shapes = {t.name: (t.cpu, t.memory_mb, t.is_ps) for t in plan.tasks}
    assert shapes == {
        "worker:0": (2.0, None, False),
        "worker:1": (2.0, None, False),
        "ps:0": (0.5, 300, True),
    }
    flags = [a for a in plan.tasks[1].argv if a.startswith("--")]
    assert flags[-2:] == ["--job_name=worker", "--task_index=1"]
    assert plan.tasks[1].argv[:3] == (sys.executable, "-m", "liqi.training.launcher")
    with pytest.raises(InvalidRequestError, match="placement must be one of PACK, SPREAD"):
        parse_cluster('{"worker":{"count":1},"placement":"STRICT"}')


def plan_of(*tasks: tuple[str, float | None, int | None], cpu: float = 1.0) -> LaunchPlan:
    specs = tuple(
        TaskSpec(name, ("p",), {}, "/w", f"/l/{name}", name.startswith("ps"), task_cpu, mb)
        for name, task_cpu, mb in tasks
    )
    return LaunchPlan(job_id="j", job_dir="/j", tasks=specs, cpu=cpu)


def test_a_bundle_per_task_and_a_plan_bigger_than_the_cluster_is_named() -> None:
    plan = plan_of(("worker:0", 2.0, 1024), ("worker:1", None, None), ("ps:0", 0.5, None))
    assert bundles(plan) == [{"CPU": 2.0, "memory": float(GIB)}, {"CPU": 1.0}, {"CPU": 0.5}]
    assert fit_problem(plan, {"CPU": 8.0, "memory": 4.0 * GIB}) is None
    problem = fit_problem(plan, {"CPU": 3.0, "memory": 4.0 * GIB})
    assert problem == (
        "the job does not fit the Ray cluster: its 3 tasks ask for 3.5 CPU and 1024 MB of "
        "memory in all (worker:0 2 CPU 1024 MB, worker:1 1 CPU, ps:0 0.5 CPU), and the whole "
        "cluster has 3 CPU and 4096 MB of memory. Ask for fewer or smaller tasks (-Dcluster, "
        "cpu), or run the job in a bigger resource group."
    )
    assert fit_problem(plan, {"CPU": 8.0, "memory": 0.5 * GIB}) is not None


def test_the_verdict_is_the_local_supervisors() -> None:
    ps = frozenset({"ps:0"})
    assert verdict({"worker:0": None, "worker:1": 0, "ps:0": None}, ps) is None
    assert verdict({"worker:0": 0, "worker:1": 0, "ps:0": None}, ps) == ("SUCCEEDED", "")
    assert verdict({"worker:0": None, "worker:1": 2, "ps:0": None}, ps) == ("FAILED", "worker:1")
    assert verdict({"worker:0": None, "worker:1": None, "ps:0": -9}, ps) == ("FAILED", "ps:0")


def test_prefixed_output_splits_back_into_each_tasks_output() -> None:
    out = io.BytesIO()
    chief, ps = TaskOutput("worker:0", out), TaskOutput("ps:0", out)
    chief.write(b"step 1\nstep")
    ps.write(b"[worker:0] not a prefix\n")
    chief.write(b" 2\n")
    out.write(b"liqi: a line of the driver's\n")
    ps.write(b"Traceback (most recent call last):\nValueError: bad\nbye")
    ps.close()
    assert out.getvalue().startswith(b"[worker:0] step 1\n[ps:0] [worker:0] not a prefix\n")
    parts = split_task_output(out.getvalue() + b"[ps:0] unfinished", ["worker:0", "ps:0"])
    assert parts == {
        "worker:0": b"step 1\nstep 2\nliqi: a line of the driver's\n",
        "ps:0": b"[worker:0] not a prefix\nTraceback (most recent call last):\n"
        b"ValueError: bad\nbye\n",
    }
    assert ps.last_error() == "ValueError: bad"
    # A line without an end is written in pieces (64 KiB each), its end when the task ends.
    endless = TaskOutput("worker:1", out := io.BytesIO())
    endless.write(b"x" * (200 * 1024))
    piece = b"x" * (64 * 1024) + b"\n"
    assert split_task_output(out.getvalue(), ["worker:1"])["worker:1"] == piece * 3
    endless.close()
    assert (
        split_task_output(out.getvalue(), ["worker:1"])["worker:1"]
        == piece * 3 + b"x" * (8 * 1024) + b"\n"
    )
