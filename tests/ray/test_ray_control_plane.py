"""A real control plane whose JobRunner runs jobs on the Ray head: submit, logs through
``liqi job logs``' API, outputs uploaded, kill, states; the resource group chosen by
``-DresourceGroup`` or the server's default (LIQI_RESOURCE_GROUPS, LIQI_RESOURCE_GROUP).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from liqi.backends.jobs import LaunchPlan
from liqi.backends.ray_jobs import submission_id
from liqi.cli import main
from liqi.client import Client
from liqi.errors import InvalidRequestError, PermissionDeniedError
from liqi.sandbox import sandbox_available
from tests.support.ray_head import RayHead, ray_groups
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
        assert done.resource_group == "ray"  # the server's default group
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


def test_a_job_bigger_than_any_node_is_refused_at_submit(
    ray_server: LiveServer, tmp_path: Path
) -> None:
    with ray_server.admin() as admin:
        script = add_script(admin, tmp_path, "small.py", "print('hi')\n")
        with pytest.raises(InvalidRequestError) as caught:
            admin.submit_job(script, resources={"cpu": 64})
        assert "The job asks for 64 CPU, and no node of resource group 'ray'" in str(caught.value)
        assert admin.list_jobs() == []


def test_a_job_on_ray_is_killed(ray_server: LiveServer, tmp_path: Path) -> None:
    with ray_server.admin() as admin:
        script = add_script(admin, tmp_path, "sleeper.py", SLEEPER)
        job = admin.submit_job(script)
        # The script runs in a folder of the Ray node's own, not under LIQI_HOME: its log.
        wait_until(
            lambda: "sleeping" in "".join(admin.follow_logs(job.id, follow=False)),
            "the job's script to start",
            timeout_s=90,
        )
        admin.kill_job(job.id)
        done = admin.wait_job(job.id, timeout_s=60)
        assert done.state == "CANCELLED", done.reason


@pytest.fixture
def local_first_server(ray_head: RayHead, tmp_path: Path) -> Iterator[LiveServer]:
    """A server with groups ``local`` (its default) and ``ray``."""
    with live_server(
        tmp_path / "home", None, isolation="none", resource_groups=ray_groups(ray_head)
    ) as live:
        yield live


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main.cli, list(args), env=env, catch_exceptions=False)


def test_pai_resource_group_flag_runs_the_job_on_ray(
    local_first_server: LiveServer, ray_head: RayHead, tmp_path: Path
) -> None:
    home = str(local_first_server.home)
    script = tmp_path / "hello.py"
    script.write_text("import os\nprint('hello from', os.environ['LIQI_JOB_ID'], flush=True)\n")
    pai = ("--home", home, "pai", "-o", "json", "-name", "tensorflow", f"-Dscript={script}")
    result = cli(*pai, "-DresourceGroup=ray")
    assert result.exit_code == 0, result.output
    log, brace, rest = result.stdout.partition("{")  # the job's log, streamed, then the job
    job = json.loads(brace + rest)
    assert (job["state"], job["resource_group"]) == ("SUCCEEDED", "ray")
    assert log == f"hello from {job['id']}\n"
    # Ray knows the job by the submission id liqi gave it.
    from ray.job_submission import JobSubmissionClient

    info = JobSubmissionClient(ray_head.dashboard_url).get_job_info(submission_id(job["id"]))
    assert info.metadata == {"liqi_job_id": job["id"], "liqi_task": "chief"}
    assert str(info.status.value) == "SUCCEEDED"

    refused = cli(*pai, "-DresourceGroup=gpu")
    assert refused.exit_code != 0
    assert "Resource group 'gpu' does not exist. Resource groups: local, ray" in refused.output
    with local_first_server.admin() as admin:
        assert [j.id for j in admin.list_jobs()] == [job["id"]]


def test_server_status_lists_the_groups_with_their_health(
    ray_head: RayHead, tmp_path: Path
) -> None:
    env = {
        "LIQI_RESOURCE_GROUPS": ray_groups(ray_head),
        "LIQI_RESOURCE_GROUP": "ray",
        "LIQI_PROJECT_RESOURCE_GROUPS": "vision=ray,tabular=local",
    }
    home = str(tmp_path / "home")
    result = cli("--home", home, "server", "status", "--output", "json", env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resource_groups"] == [
        {
            "name": "local",
            "backend": "local",
            "address": None,
            "default": False,
            "projects": ["tabular"],
            "health": "ok",
        },
        {
            "name": "ray",
            "backend": "ray",
            "address": ray_head.dashboard_url,
            "default": True,
            "projects": ["vision"],
            "health": "ok",
        },
    ]
    text = cli("--home", home, "server", "status", env=env).stdout
    assert (
        f"  ray (default): ray at {ray_head.dashboard_url}, ok; default of project(s) vision"
        in (text)
    )


def test_a_sandboxed_server_takes_ray_jobs_from_superusers_only(
    ray_head: RayHead, tmp_path: Path
) -> None:
    ok, why = sandbox_available()
    assert ok, f"this machine cannot sandbox workloads: {why}"  # as tests/security does
    with live_server(
        tmp_path / "home", None, isolation="sandbox", resource_groups=ray_groups(ray_head)
    ) as live, live.admin() as admin:  # fmt: skip
        admin.create_project("members")
        key = admin.create_key(project="members", role="member", name="mallory")
        assert key.secret
        with live.client(key.access_id, key.secret) as member:
            path = tmp_path / "hello.py"
            path.write_text("print('hello', flush=True)\n")
            script = member.add_resource(path, project="members").uri
            with pytest.raises(PermissionDeniedError) as info:
                member.submit_job(script, project="members", resource_group="ray")
            assert "runs user code as the Ray cluster's user, without liqi's sandbox" in str(
                info.value
            )
            assert member.list_jobs(project="members") == []
        # A superuser's job on Ray: its plan has no sandbox (Ray would refuse one).
        job = admin.submit_job(script, project="members", resource_group="ray")
        done = admin.wait_job(job.id, timeout_s=120)
        assert (done.state, done.resource_group) == ("SUCCEEDED", "ray"), done.reason
        assert "".join(admin.follow_logs(job.id, follow=False)) == "hello\n"
        plan = LaunchPlan.from_json((live.home / "jobs" / job.id / "plan.json").read_text())
        assert plan.sandbox is None


def test_a_job_submitted_while_the_head_is_up_is_checked_and_runs(
    local_first_server: LiveServer, ray_head: RayHead, tmp_path: Path
) -> None:
    with local_first_server.admin() as admin:
        assert admin.check_resource_group("ray") == {
            "name": "ray",
            "backend": "ray",
            "address": ray_head.dashboard_url,
            "default": False,
            "health": "ok",
        }
    script = tmp_path / "hello.py"
    script.write_text("print('hello from ray', flush=True)\n")
    home = str(local_first_server.home)
    submit = ("--home", home, "job", "submit", str(script), "--resource-group", "ray")
    result = cli(*submit, "-o", "json")
    assert result.exit_code == 0, result.output
    log, brace, rest = result.stdout.partition("{")
    job = json.loads(brace + rest)
    assert (job["state"], job["resource_group"]) == ("SUCCEEDED", "ray"), job["reason"]
    assert log == "hello from ray\n"
