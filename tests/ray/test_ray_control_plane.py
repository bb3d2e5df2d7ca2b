"""A real control plane whose JobRunner runs jobs on the Ray head: submit, logs through
``liqi job logs``' API, outputs uploaded, kill, states.

The server's settings cannot choose the Ray backend yet (resource groups are the next part of
issue 17), so these tests put it in place of the local one where the plane is opened.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.backends.jobs import LaunchPlan
from liqi.backends.ray_jobs import RayJobBackend
from liqi.client import Client
from tests.support.ray_head import RayHead
from tests.support.servers import LiveServer, live_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

WRITER = """
    import argparse, os, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets")
    args, _ = parser.parse_known_args()
    print("job", os.environ["LIQI_JOB_ID"], "on ray", flush=True)
    with open(os.path.join(args.buckets, "model.txt"), "w") as fh:
        fh.write("weights")
    sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""

SLEEPER = """
    import time
    open("started", "w").close()
    print("sleeping", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def ray_server(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LiveServer]:
    monkeypatch.setattr(
        "liqi.control.server.plane.LocalBackend",
        lambda: RayJobBackend(ray_head.dashboard_url, log_interval_s=0.2),
    )
    # Ray runs every job as the cluster's user: no liqi sandbox (docs/ray.md).
    with live_server(tmp_path / "home", None, isolation="none") as live:
        yield live


def add_script(client: Client, tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return client.add_resource(path, force=True).uri


def test_a_job_on_ray_succeeds_with_its_logs_and_outputs(
    ray_server: LiveServer, tmp_path: Path
) -> None:
    with ray_server.admin() as admin:
        admin.create_bucket("models", project="default")
        script = add_script(admin, tmp_path, "writer.py", WRITER)
        job = admin.submit_job(script, buckets=["oss://models/out/"], resources={"cpu": 2})
        done = admin.wait_job(job.id, timeout_s=120)
        logs = "".join(admin.follow_logs(job.id, follow=False))
        assert done.state == "SUCCEEDED", (done.reason, logs)
        assert logs == f"job {job.id} on ray\n"
        plan = (ray_server.home / "jobs" / job.id / "plan.json").read_text()
        assert LaunchPlan.from_json(plan).cpu == 2.0  # what Ray was asked to reserve
        admin.get_object("models", "out/model.txt", tmp_path / "model.txt")
        assert (tmp_path / "model.txt").read_bytes() == b"weights"


def test_a_failing_job_on_ray_fails_with_the_reason_and_uploads_nothing(
    ray_server: LiveServer, tmp_path: Path
) -> None:
    with ray_server.admin() as admin:
        admin.create_bucket("models", project="default")
        script = add_script(admin, tmp_path, "writer.py", WRITER)
        job = admin.submit_job(script, buckets=["oss://models/out/"], env={"EXIT_CODE": "3"})
        done = admin.wait_job(job.id, timeout_s=120)
        assert done.state == "FAILED"
        assert done.exit_code == 3
        assert done.reason == "the script exited with code 3"
        assert admin.list_objects("models").objects == ()


def test_a_job_on_ray_is_killed(ray_server: LiveServer, tmp_path: Path) -> None:
    with ray_server.admin() as admin:
        script = add_script(admin, tmp_path, "sleeper.py", SLEEPER)
        job = admin.submit_job(script)
        started = ray_server.home / "jobs" / job.id / "work" / "started"
        wait_until(started.exists, "the job's script to start", timeout_s=90)
        admin.kill_job(job.id)
        done = admin.wait_job(job.id, timeout_s=60)
        assert done.state == "CANCELLED", done.reason
