"""RayJobBackend against a real local Ray head: LaunchPlans as Ray jobs, run by liqi's driver."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
import textwrap
import uuid
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from liqi.backends.jobs import Handle, LaunchPlan, RunStatus, TaskSpec
from liqi.backends.ray_jobs import RayJobBackend, submission_id
from liqi.errors import BackendError
from tests.support.ray_head import RayHead
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

HELD = """
    import os, sys, time
    print("hello from", os.environ["LIQI_JOB_ID"], flush=True)
    open("started", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists("release"):
        if time.monotonic() > deadline:
            sys.exit("the test never released this job")
        time.sleep(0.02)
    print("released", flush=True)
    sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def launch_held(backend: RayJobBackend, root: Path) -> tuple[LaunchPlan, Handle]:
    """A job whose script holds until killed, launched and started."""
    plan = make_plan(root, HELD)
    handle = backend.launch(plan)
    wait_until(
        lambda: (Path(plan.job_dir) / "work" / "started").exists(),
        "the held job's script to start",
        timeout_s=90,
    )
    return plan, handle


def make_plan(root: Path, body: str, **plan_options: object) -> LaunchPlan:
    """A staged one-task job as control/jobs/staging.py lays it out: the script in inputs/,
    the task running in work/ through liqi's launcher, its log in logs/chief.log."""
    job_id = f"j{uuid.uuid4().hex[:12]}"
    job_dir = root / job_id
    for name in ("inputs", "work", "logs"):
        (job_dir / name).mkdir(parents=True)
    script = job_dir / "inputs" / "script.py"
    script.write_text(textwrap.dedent(body))
    argv = (sys.executable, "-m", "liqi.training.launcher", str(script))
    env = {"LIQI_JOB_ID": job_id, "LIQI_TASK": "chief"}
    log = str(job_dir / "logs" / "chief.log")
    task = TaskSpec("chief", argv, env, str(job_dir / "work"), log)
    return LaunchPlan(job_id=job_id, job_dir=str(job_dir), tasks=(task,), **plan_options)  # type: ignore[arg-type]


def with_env(plan: LaunchPlan, **env: str) -> LaunchPlan:
    task = plan.tasks[0]
    return replace(plan, tasks=(replace(task, env={**task.env, **env}),))


def wait_for_end(backend: RayJobBackend, handle: Handle, plan: LaunchPlan) -> RunStatus:
    found: list[RunStatus] = []

    def ended() -> bool:
        status = backend.status(handle, Path(plan.job_dir))
        found[:] = [status]
        return not status.running

    wait_until(ended, f"the Ray job {handle.ref} to end", timeout_s=120, interval_s=0.1)
    return found[0]


def log_of(plan: LaunchPlan) -> str:
    return Path(plan.tasks[0].log).read_text()


def assert_nothing_left(plan: LaunchPlan) -> None:
    """Nothing of the job runs any more (what is left is named if it does)."""

    def gone() -> bool:
        return not processes_of(plan)

    try:
        wait_until(gone, "the job's processes to be gone", timeout_s=30)
    except AssertionError:
        left = []
        for proc in processes_of(plan):
            with contextlib.suppress(psutil.Error):
                left.append((proc.pid, proc.ppid(), proc.status(), proc.cmdline()))
        raise AssertionError(f"the job's processes are still running: {left}") from None


def processes_of(plan: LaunchPlan) -> list[psutil.Process]:
    """The driver and task processes of the job, found by its folder on their command line."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(plan.job_dir in arg for arg in proc.info["cmdline"] or []):
                found.append(proc)
    return [p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def backend(ray_head: RayHead) -> RayJobBackend:
    return RayJobBackend(ray_head.dashboard_url, log_interval_s=0.2)


def test_a_job_that_prints_and_exits_0_succeeds_with_its_log(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    plan = make_plan(tmp_path, 'import os\nprint("hello from", os.environ["LIQI_JOB_ID"])\n')
    handle = backend.launch(plan)
    assert handle == Handle("ray", submission_id(plan.job_id))
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert (status.result.state, status.result.exit_code) == ("SUCCEEDED", 0)
    assert log_of(plan) == f"hello from {plan.job_id}\n"
    # Ray's own tools see it, with its resources and liqi's job id.
    info = backend.client().get_job_info(handle.ref)
    assert info.metadata == {"liqi_job_id": plan.job_id, "liqi_task": "chief"}


def test_cpu_and_memory_of_the_plan_are_what_ray_reserves(
    ray_head: RayHead, backend: RayJobBackend, tmp_path: Path
) -> None:
    from ray.util.state import list_actors

    plan = make_plan(tmp_path, HELD, cpu=2.0, memory_mb=300)
    handle = backend.launch(plan)
    wait_until(
        lambda: (Path(plan.job_dir) / "work" / "started").exists(),
        "the held job's script to start",
        timeout_s=90,
    )
    # Ray runs the entrypoint from a JobSupervisor actor holding the entrypoint's resources.
    actors = list_actors(
        address=ray_head.dashboard_url,
        filters=[("name", "=", f"_ray_internal_job_actor_{handle.ref}")],
        detail=True,
        raise_on_missing_output=False,
    )
    assert len(actors) == 1
    assert actors[0].required_resources == {"CPU": 2.0, "memory": 300.0 * 1024 * 1024}
    (Path(plan.job_dir) / "work" / "release").touch()
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "SUCCEEDED", (status.result.reason, log_of(plan))


def test_exit_3_fails_with_the_reason_and_the_log(backend: RayJobBackend, tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "import sys\nprint('about to fail', flush=True)\nsys.exit(3)\n")
    status = wait_for_end(backend, backend.launch(plan), plan)
    assert status.result is not None
    assert status.result.state == "FAILED"
    assert status.result.exit_code == 3
    assert status.result.reason == "the script exited with code 3"
    assert log_of(plan) == "about to fail\n"


def test_the_plans_timeout_is_enforced_by_the_driver(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    plan = make_plan(tmp_path, HELD, timeout_s=1.0)  # held: it would wait for 120 s
    status = wait_for_end(backend, backend.launch(plan), plan)
    assert status.result is not None
    assert (status.result.state, status.result.reason) == (
        "FAILED",
        "timed out after 1 s (timeout_s)",
    )
    assert_nothing_left(plan)


def test_kill_of_a_running_job_cancels_it_and_leaves_nothing_running(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    plan, handle = launch_held(backend, tmp_path)
    backend.cancel(handle)
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "CANCELLED"
    assert "released" not in log_of(plan)
    assert f"hello from {plan.job_id}" in log_of(plan)
    assert_nothing_left(plan)
    backend.cancel(handle)  # a second kill of an ended job is harmless


def test_a_new_backend_reattaches_from_the_stored_handle(ray_head: RayHead, tmp_path: Path) -> None:
    first = RayJobBackend(ray_head.dashboard_url)
    plan = with_env(make_plan(tmp_path, HELD), EXIT_CODE="0")
    stored = first.launch(plan)
    wait_until(
        lambda: (Path(plan.job_dir) / "work" / "started").exists(),
        "the held job's script to start",
        timeout_s=90,
    )
    # The control plane restarts: a new backend object, the handle as the database kept it.
    second = RayJobBackend(ray_head.dashboard_url, log_interval_s=0.0)
    handle = Handle(stored.backend, stored.ref)
    assert second.status(handle, Path(plan.job_dir)).running
    (Path(plan.job_dir) / "work" / "release").touch()
    status = wait_for_end(second, handle, plan)
    assert status.result is not None
    assert status.result.state == "SUCCEEDED"
    assert log_of(plan) == f"hello from {plan.job_id}\nreleased\n"


def test_a_second_launch_of_the_same_job_stops_the_first(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    """The control plane stopped after submitting but before storing the handle: the job is
    still PENDING and is launched again. The Ray job of the first launch must not run on,
    unknown to liqi."""
    plan = make_plan(tmp_path, HELD)
    handle = backend.launch(plan)
    with pytest.raises(BackendError, match=f"already had a Ray job {handle.ref} .* stopped"):
        backend.launch(plan)
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "CANCELLED"
    assert_nothing_left(plan)


def test_an_unknown_handle_is_a_job_ray_does_not_know(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    handle = Handle("ray", "liqi-never-submitted")
    status = backend.status(handle, tmp_path)
    assert not status.running
    assert status.result is None  # the runner makes the job LOST, with this detail
    assert "does not know the Ray job liqi-never-submitted" in status.detail
    backend.cancel(handle)  # nothing to stop: no error


def test_a_job_whose_driver_dies_fails_with_the_reason(
    backend: RayJobBackend, tmp_path: Path
) -> None:
    plan, handle = launch_held(backend, tmp_path)
    drivers = [p for p in processes_of(plan) if "liqi.backends.ray_driver" in p.cmdline()]
    assert len(drivers) == 1
    drivers[0].send_signal(signal.SIGKILL)
    status = wait_for_end(backend, handle, plan)
    assert status.result is not None
    assert status.result.state == "FAILED"
    assert status.result.reason.startswith("liqi's driver on Ray ended without a result: ")
    assert "exit code" in status.result.reason
    # The task died with its driver: nothing of the job is left running.
    assert_nothing_left(plan)


def test_a_sandboxed_plan_is_refused(backend: RayJobBackend, tmp_path: Path) -> None:
    plan = make_plan(tmp_path, "print('never')\n")
    with pytest.raises(BackendError, match="does not provide: Ray runs every job as the"):
        backend.launch(replace(plan, sandbox={"name": "job-x"}))
    known = {job.submission_id for job in backend.client().list_jobs()}
    assert submission_id(plan.job_id) not in known


@pytest.mark.usefixtures("ray_head")  # Ray installed, or skipped as the others are
def test_no_cluster_at_the_address_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    backend = RayJobBackend(address, request_timeout_s=5)
    plan = make_plan(tmp_path, "print('never')\n")
    with pytest.raises(BackendError, match=f"Cannot reach the Ray cluster at {address}"):
        backend.launch(plan)
    # An unreachable cluster does not end a running job: it may be back on the next tick.
    status = backend.status(Handle("ray", submission_id(plan.job_id)), Path(plan.job_dir))
    assert status.running
    assert address in status.detail
