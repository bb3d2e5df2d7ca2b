"""A job's files through liqi's store, for nodes that share no disk with the control plane
(control/jobs/shipping.py, backends/job_files.py), against a real server: the one-time
ticket, what the job's key may and may not do, and what outputs are taken back.

The runner is stopped so that the hand-made RUNNING job stays as the test leaves it.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liqi.backends.job_files import CLAIM_PATH, JobFilesClient
from liqi.backends.jobs import LaunchPlan, TaskResult, TaskSpec
from liqi.control.db.tables import Job, Project
from liqi.control.server.plane import ControlPlane
from liqi.errors import BackendError
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    with live_server(tmp_path / "home", None, isolation="none", standby=False) as live:
        assert live.plane is not None
        live.plane.runner.stop()
        yield live


def _plane(server: LiveServer) -> ControlPlane:
    assert server.plane is not None
    return server.plane


def running_job(server: LiveServer, job_id: str) -> LaunchPlan:
    """A RUNNING job staged as the runner stages one: a script, a bucket folder with a file
    the job will leave alone and one it will change, its manifest; then shipped."""
    plane = _plane(server)
    job_dir = plane.runner.job_dir(job_id)
    bucket = job_dir / "buckets" / "models" / "out"
    bucket.mkdir(parents=True)
    (bucket / "kept.txt").write_text("staged")
    (bucket / "changed.txt").write_text("staged")
    (job_dir / "inputs").mkdir()
    (job_dir / "inputs" / "train.py").write_text("print('hi')\n")
    (job_dir / "work").mkdir()
    (job_dir / "logs").mkdir()
    manifest = {"buckets": [{"uri": "oss://models/out/", "local_dir": f"{bucket}/"}], "staged": {}}
    (job_dir / "manifest.json").write_text(json.dumps(manifest))
    argv = ("python", str(job_dir / "inputs" / "train.py"), f"--buckets={bucket}/")
    task = TaskSpec("chief", argv, {}, str(job_dir / "work"), str(job_dir / "logs/chief.log"))
    plan = LaunchPlan(job_id=job_id, job_dir=str(job_dir), tasks=(task,))
    with plane.sessions.begin() as session:
        project = session.query(Project).filter_by(name="default").one()
        session.add(
            Job(id=job_id, project_id=project.id, name="t", spec_json="{}", state="RUNNING")
        )
        project_id = project.id
    return plane.shipper.ship(plan, project_id)


def claim(server: LiveServer, ticket: str) -> httpx.Response:
    return httpx.post(server.url + CLAIM_PATH, json={"ticket": ticket}, trust_env=False)


def test_the_driver_fetches_the_staged_folder_and_it_is_gone_from_liqi_home(
    server: LiveServer, tmp_path: Path
) -> None:
    plan = running_job(server, "j-files-1")
    assert plan.files is not None
    assert plan.files["endpoint"] == server.url
    job_dir = Path(plan.job_dir)
    # Only what travels through the store runs: the staged copies are gone here.
    assert not any((job_dir / name).exists() for name in ("inputs", "work", "buckets"))
    with JobFilesClient.claim(server.url, "j-files-1", plan.files["ticket"]) as files:
        local = files.fetch(tmp_path / "node" / "job")
    assert local.job_dir == str(tmp_path / "node" / "job")
    assert local.tasks[0].argv[1] == str(tmp_path / "node/job/inputs/train.py")
    assert local.tasks[0].cwd == str(tmp_path / "node/job/work")
    assert (tmp_path / "node/job/inputs/train.py").read_text() == "print('hi')\n"
    assert (tmp_path / "node/job/buckets/models/out/kept.txt").read_text() == "staged"


def test_a_ticket_works_once_and_a_second_claim_revokes_the_key(server: LiveServer) -> None:
    plan = running_job(server, "j-files-2")
    assert plan.files is not None
    ticket = plan.files["ticket"]
    first = claim(server, ticket)
    assert first.status_code == 200
    key = first.json()
    again = claim(server, ticket)  # e.g. someone who read `ray job list`
    assert again.status_code == 401
    assert "already claimed" in again.json()["message"]
    files = JobFilesClient(server.url, "j-files-2", key["access_id"], key["access_key"])
    with files, pytest.raises(BackendError, match="revoked"):
        files.fetch(Path(plan.job_dir).parent / "elsewhere")
    assert claim(server, "not-a-ticket").status_code == 401
    assert claim(server, "").status_code == 400
    huge = httpx.post(server.url + CLAIM_PATH, content=b"x" * 10_000, trust_env=False)
    assert huge.status_code == 413


def test_the_jobs_key_reaches_its_own_files_and_nothing_else(server: LiveServer) -> None:
    one = running_job(server, "j-files-3")
    other = running_job(server, "j-files-4")
    assert one.files is not None
    assert other.files is not None
    key = claim(server, one.files["ticket"]).json()
    with server.admin() as admin:
        admin.create_bucket("models", project="default")
        admin.put_object("models", "secret.txt", b"project data")
    job_key = server.client(key["access_id"], key["access_key"])
    with job_key:
        for attempt in (
            lambda: job_key.list_buckets(),
            lambda: job_key.list_objects("models"),
            lambda: job_key.read_object("models", "secret.txt"),
            lambda: job_key.list_jobs(project="default"),
        ):
            with pytest.raises(Exception, match="workload key"):
                attempt()
    theirs = JobFilesClient(server.url, "j-files-4", key["access_id"], key["access_key"])
    with theirs, pytest.raises(BackendError, match="workload key"):
        theirs.fetch(Path(one.job_dir).parent / "stolen")
    # A person's key, even the admin's, does not send a job's outputs or result.
    profile = server.admin_profile().profiles["default"]
    admin_files = JobFilesClient(server.url, "j-files-3", profile.access_id, profile.access_key)
    with admin_files, pytest.raises(BackendError, match="Only job j-files-3's own workload key"):
        admin_files.send_result(TaskResult("SUCCEEDED", 0, "", 0, "", ""))


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_outputs_are_taken_only_under_the_jobs_bucket_folders(
    server: LiveServer, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    plan = running_job(server, "j-files-5")
    assert plan.files is not None
    files = JobFilesClient.claim(server.url, "j-files-5", plan.files["ticket"])
    request.addfinalizer(files.close)
    job_dir = Path(plan.job_dir)
    node = files.fetch(tmp_path / "node")
    sent = tmp_path / "sent"
    for case, name in {
        "outside": "work/evil.py",
        "manifest": "manifest.json",
        "other bucket": "buckets/other/x.txt",
    }.items():
        (sent / case / name).parent.mkdir(parents=True, exist_ok=True)
        (sent / case / name).write_text("x")
        with pytest.raises(BackendError, match="not under one of the job's bucket folders"):
            files.send_outputs(sent / case, [name])
    up = _tar({"buckets/models/out/../../../result.json": b"{}"})
    answer = files._http.put("/api/v1/jobs/j-files-5/files/outputs", content=up)
    assert answer.status_code == 400, answer.text
    assert not (job_dir / "result.json").exists()
    assert not (job_dir / "buckets").exists()
    assert not (job_dir / "work").exists()
    assert json.loads((job_dir / "manifest.json").read_text())["buckets"]  # untouched
    # The real thing: the changed file and a new one come back, nothing else.
    (Path(node.job_dir) / "buckets/models/out/changed.txt").write_text("trained")
    (Path(node.job_dir) / "buckets/models/out/new/model.pb").parent.mkdir()
    (Path(node.job_dir) / "buckets/models/out/new/model.pb").write_bytes(b"\x00" * 3)
    files.send_outputs(
        Path(node.job_dir),
        ["buckets/models/out/changed.txt", "buckets/models/out/new/model.pb"],
    )
    out = job_dir / "buckets/models/out"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "changed.txt",
        "new/model.pb",
    ]
    files.send_result(TaskResult("SUCCEEDED", 0, "", 12, "a", "b"))
    assert TaskResult.read(job_dir / "result.json") == TaskResult("SUCCEEDED", 0, "", 12, "a", "b")
    bad = files._http.put("/api/v1/jobs/j-files-5/files/result", content=b'{"state": "WON"}')
    assert bad.status_code == 400
    # Once the job has ended its files are closed.
    with _plane(server).sessions.begin() as session:
        job = session.get(Job, "j-files-5")
        assert job is not None
        job.state = "SUCCEEDED"
    with pytest.raises(BackendError, match="its files are closed"):
        files.send_result(TaskResult("FAILED", 1, "late", 0, "", ""))


def test_a_control_plane_out_of_reach_is_named_with_what_to_fix() -> None:
    from liqi.asgi.listen import free_ports

    (port,) = free_ports(1)
    with pytest.raises(BackendError, match="out of reach from this node") as caught:
        JobFilesClient.claim(f"http://127.0.0.1:{port}", "j-x", "ticket")
    assert "must be reachable from every node of the resource group" in str(caught.value)
