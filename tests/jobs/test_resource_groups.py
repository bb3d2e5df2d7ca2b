"""A job's resource group through the real control plane, without a Ray head: refused at submit
(nothing created) when unknown or when its head does not answer, recorded on the job, and a
group gone from the settings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from liqi.config import ServerSettings
from liqi.control.db.tables import Job, Project
from liqi.control.server.plane import open_plane
from liqi.errors import InvalidRequestError, ResourceGroupUnavailableError
from liqi.resource_groups import parse_resource_groups
from tests.cli.test_cli_commands import run
from tests.jobs.test_jobs import add_script, run_job
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(120)

# A Ray group whose head is not there (port 9, discard): nothing reaches it in these tests.
DEAD_RAY = "ray=ray:http://127.0.0.1:9"


@pytest.fixture
def groups_server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "home", None, isolation="none", resource_groups=DEAD_RAY) as live:
        yield live


def test_an_unknown_group_is_refused_and_nothing_is_created(
    groups_server: LiveServer, tmp_path: Path
) -> None:
    with groups_server.admin() as admin:
        script = add_script(admin, tmp_path, "hello.py", "print('hello')\n")
        with pytest.raises(InvalidRequestError) as info:
            admin.submit_job(script, resource_group="gpu")
        assert "Resource group 'gpu' does not exist. Resource groups: local, ray" in str(info.value)
        with pytest.raises(InvalidRequestError) as info:
            admin.submit_job(script, resource_group="gpu", cluster={"ps": 1, "workers": 2})
        assert "Resource group 'gpu' does not exist" in str(info.value)
        assert admin.list_jobs() == []


def test_a_job_names_its_group_and_local_is_the_default(
    groups_server: LiveServer, tmp_path: Path
) -> None:
    with groups_server.admin() as admin:
        script = add_script(admin, tmp_path, "hello.py", "print('hello')\n")
        job = run_job(admin, script)
        assert (job.state, job.resource_group) == ("SUCCEEDED", "local")
        job = run_job(admin, script, resource_group="local")
        assert (job.state, job.resource_group) == ("SUCCEEDED", "local")


def test_a_ray_group_whose_head_is_down_refuses_the_job_and_nothing_is_created(
    groups_server: LiveServer, tmp_path: Path
) -> None:
    with groups_server.admin() as admin:
        script = add_script(admin, tmp_path, "hello.py", "print('hello')\n")
        resources = admin.list_resources()
        with pytest.raises(ResourceGroupUnavailableError) as info:
            admin.submit_job(script, resource_group="ray")
        message = str(info.value)
        assert message.startswith(
            "Resource group 'ray' (ray at http://127.0.0.1:9) cannot take jobs: cannot "
            "reach http://127.0.0.1:9/api/version: "
        )
        assert "Nothing was created. Start its Ray head" in message
        assert "-DresourceGroup=NAME (liqi pai) or --resource-group NAME" in message
        assert message.endswith("other groups: local.")
        with pytest.raises(ResourceGroupUnavailableError):
            admin.check_resource_group("ray")
        assert admin.check_resource_group()["name"] == "local"  # the server's default
        # The CLI shows the message, exits 6 and uploads nothing.
        path = tmp_path / "cli.py"
        path.write_text("print('hello')\n")
        home = groups_server.home
        for words in (
            ("job", "submit", str(path), "--resource-group", "ray"),
            ("pai", "-name", "tensorflow", f"-Dscript={path}", "-DresourceGroup=ray"),
        ):
            refused = run(home, *words)
            assert refused.exit_code == 6, refused.output
            assert "Resource group 'ray' (ray at http://127.0.0.1:9) cannot take jobs" in (
                refused.output
            )
            assert "Uploaded" not in refused.output
        assert admin.list_jobs() == []
        assert admin.list_resources() == resources
    jobs_dir = groups_server.home / "jobs"
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


def test_a_ray_head_down_after_the_check_fails_the_job_naming_the_group_and_address(
    groups_server: LiveServer, tmp_path: Path
) -> None:
    assert groups_server.plane is not None
    # The head answered the check, then went away before the runner launched the job.
    groups_server.plane.group_health.probe = lambda group, timeout_s: "ok"
    with groups_server.admin() as admin:
        script = add_script(admin, tmp_path, "hello.py", "print('hello')\n")
        job = run_job(admin, script, resource_group="ray")
        assert job.state == "FAILED"
        assert job.resource_group == "ray"
        assert job.reason.startswith("could not start in resource group 'ray': ")
        assert "127.0.0.1:9" in job.reason or "pip install 'liqi[ray]'" in job.reason


def test_a_running_job_whose_group_is_gone_is_lost(tmp_path: Path) -> None:
    settings = ServerSettings(
        home=tmp_path / "home", resource_groups=parse_resource_groups(DEAD_RAY)
    )
    settings.store_dir.mkdir(parents=True)
    plane = open_plane(settings)
    try:
        with plane.sessions.begin() as session:
            project = Project(name="proj", description="")
            session.add(project)
            session.flush()
            for job_id, group in (("j-gone", "gpu"), ("j-pending", "gpu")):
                session.add(
                    Job(
                        id=job_id, project_id=project.id, name="n", spec_json="{}",
                        state="RUNNING" if job_id == "j-gone" else "PENDING", backend=group,
                        handle="liqi-j-gone",
                    )
                )  # fmt: skip
        plane.runner.tick()
        with plane.sessions() as session:
            gone = session.get(Job, "j-gone")
            pending = session.get(Job, "j-pending")
            assert gone is not None
            assert pending is not None
            assert gone.state == "LOST"
            assert pending.state == "FAILED"
            for job in (gone, pending):
                assert job.reason == (
                    "its resource group 'gpu' is no longer in the server's settings (groups: "
                    "local, ray); define it again in LIQI_RESOURCE_GROUPS"
                )
    finally:
        plane.close()


def test_job_submit_takes_a_group_and_status_shows_it(
    groups_server: LiveServer, tmp_path: Path
) -> None:
    script = tmp_path / "hello.py"
    script.write_text("print('hello')\n")
    home = groups_server.home
    refused = run(home, "job", "submit", str(script), "--resource-group", "gpu")
    assert refused.exit_code != 0
    assert "Resource group 'gpu' does not exist. Resource groups: local, ray" in refused.output
    done = run(home, "job", "submit", str(script), "--resource-group", "local", "-o", "json")
    assert done.exit_code == 0, done.output
    job_id = json.loads(done.stdout.partition("{")[1] + done.stdout.partition("{")[2])["id"]
    shown = run(home, "job", "status", job_id).stdout
    assert "resource group" in shown
    assert "local" in shown.split("resource group", 1)[1].splitlines()[0]


def test_a_service_on_a_ray_group_whose_head_is_down_is_refused_and_nothing_is_created(
    groups_server: LiveServer, tmp_path: Path
) -> None:
    """The same for services: ``metadata.resource`` naming the group at create or in a
    modify; the CLI (`liqi eas create`) shows the message."""
    spec = {
        "name": "nowhere",
        "model_path": "oss://models/m/",
        "processor": "tensorflow_cpu",
        "metadata": {"instance": 1, "resource": "ray"},
    }
    with groups_server.admin() as admin:
        with pytest.raises(ResourceGroupUnavailableError) as info:
            admin.create_service(spec)
        message = str(info.value)
        assert "Resource group 'ray' (ray at http://127.0.0.1:9) cannot take services" in message
        assert "Nothing was created." in message
        assert '"metadata": {"resource": "NAME"}' in message
        assert admin.list_services() == []
        path = tmp_path / "nowhere.json"
        path.write_text(json.dumps(spec))
        refused = run(groups_server.home, "eas", "create", str(path))
        assert refused.exit_code == 6, refused.output
        assert "cannot take services" in refused.output
        assert admin.list_services() == []
        # A service created locally cannot be moved onto the dead head either.
        admin.create_bucket("models")
        admin.put_object("models", "m/1/saved_model.pb", b"not loaded: no instance runs")
        admin.create_service({**spec, "metadata": {"instance": 0}})
        with pytest.raises(ResourceGroupUnavailableError):
            admin.modify_service("nowhere", {"metadata": {"resource": "ray"}})
        assert admin.get_service("nowhere").current_version == 1
    assert not (groups_server.home / "services" / "nowhere").exists()


def test_a_projects_default_group_takes_its_jobs_and_services(tmp_path: Path) -> None:
    """LIQI_PROJECT_RESOURCE_GROUPS: the project's jobs and services that name no group go to
    its group (here a Ray head that is down: refused, naming it), others' to the server's."""
    with (
        live_server(
            tmp_path / "home",
            None,
            isolation="none",
            resource_groups=DEAD_RAY,
            project_groups="vision=ray",
        ) as live,
        live.admin() as admin,
    ):
        admin.create_project("vision")
        script = add_script(admin, tmp_path, "hello.py", "print('hello')\n")
        with pytest.raises(ResourceGroupUnavailableError, match="'ray'"):
            admin.check_resource_group(project="vision")
        assert admin.check_resource_group(project="default")["name"] == "local"
        vision_script = admin.add_resource(tmp_path / "hello.py", project="vision").uri
        with pytest.raises(ResourceGroupUnavailableError, match="cannot take jobs"):
            admin.submit_job(vision_script, project="vision")
        service = {
            "name": "vision_svc",
            "model_path": "oss://models/m/",
            "processor": "tensorflow_cpu",
            "metadata": {"instance": 0},
        }
        with pytest.raises(ResourceGroupUnavailableError, match="cannot take services"):
            admin.create_service(service, project="vision")
        assert run_job(admin, script).resource_group == "local"
        assert admin.list_jobs(project="vision") == []
