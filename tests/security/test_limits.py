"""A member's job or service instance that goes past a limit, through a real control plane:
it is contained, killed with its cgroup, and the reason is in its state as the CLI and the SDK
show it (issue 16, "Bad input"). The limits are small so that the tests stay quick.
"""

from __future__ import annotations

import json
import resource
import textwrap
import uuid
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from liqi.cli.main import cli
from liqi.client.jobs import JobInfo
from liqi.sandbox import SandboxPolicy
from tests.security.conftest import Member
from tests.support.waiting import wait_until
from tests.support.workloads import deploy_processor, processes_in, workload_cgroups

pytestmark = [pytest.mark.timeout(240), pytest.mark.usefixtures("require_sandbox")]

ALLOCATE = """
    blocks = []
    while True:
        blocks.append(bytearray(16 * 1024 * 1024))
"""

FILL_TMP = """
    written = 0
    try:
        with open("/tmp/{name}", "wb") as f:
            while True:
                f.write(b"x" * 1024 * 1024)
                written += 1
    finally:
        print("written MB", written, flush=True)
"""

OPEN_FILES = """
    import os
    held = []
    try:
        for _ in range(100_000):
            held.append(os.open("/dev/null", os.O_RDONLY))
    finally:
        print("held", len(held), flush=True)
"""

THREADS = """
    import threading
    stop = threading.Event()
    started = 0
    try:
        while True:
            threading.Thread(target=stop.wait, daemon=True).start()
            started += 1
    finally:
        print("started", started, flush=True)
"""

DEFAULTS = SandboxPolicy(name="defaults")


def _run_job(member: Member, tmp_path: Path, code: str, **options: object) -> tuple[JobInfo, str]:
    """Run ``code`` as the member's job; its final record and its log."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    client = member.client
    uri = client.add_resource(script, project=member.project, force=True).uri
    job = client.wait_job(
        client.submit_job(uri, project=member.project, **options).id, timeout_s=90
    )
    return job, "".join(client.follow_logs(job.id, follow=False))


def _assert_nothing_left(member: Member, job: JobInfo) -> None:
    work = member.live.home / "jobs" / job.id / "work"
    wait_until(lambda: not processes_in(work), "no process in the job's folder", interval_s=0.05)
    assert workload_cgroups(f"job-{job.id}") == []


def _job_status(member: Member, job_id: str) -> dict[str, object]:
    """``liqi job status`` as the operator sees it."""
    shown = CliRunner().invoke(
        cli, ["job", "status", job_id, "-o", "json"], env=member.live.environ
    )
    assert shown.exit_code == 0, shown.output
    found: dict[str, object] = json.loads(shown.stdout)
    return found


def test_a_job_past_its_memory_is_killed_and_says_so(member: Member, tmp_path: Path) -> None:
    job, out = _run_job(member, tmp_path, ALLOCATE, resources={"memory_mb": 200})
    assert job.state == "FAILED", (job.reason, out)
    assert job.reason.startswith("memory limit exceeded"), job.reason
    assert "200 MB" in job.reason
    assert "(memory_mb)" in job.reason
    assert _job_status(member, job.id)["reason"] == job.reason
    _assert_nothing_left(member, job)


def test_a_job_filling_tmp_gets_enospc_in_its_own_tmp(member: Member, tmp_path: Path) -> None:
    name = f"fill-{uuid.uuid4().hex}"
    job, out = _run_job(member, tmp_path, FILL_TMP.format(name=name))
    assert job.state == "FAILED", (job.reason, out)
    assert "No space left on device" in job.reason
    assert f"/tmp holds {DEFAULTS.tmp_mb} MB (tmp_mb)" in job.reason
    written = int(out.split("written MB ", 1)[1].split()[0])
    assert 0 < written <= DEFAULTS.tmp_mb
    assert not Path("/tmp", name).exists()  # its /tmp was its own (and is gone with it)
    _assert_nothing_left(member, job)


def test_a_job_opening_100000_files_gets_emfile(member: Member, tmp_path: Path) -> None:
    ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    job, out = _run_job(member, tmp_path, OPEN_FILES)
    assert job.state == "FAILED", (job.reason, out)
    held = int(out.split("held ", 1)[1].split()[0])
    assert DEFAULTS.nofile - 16 < held < DEFAULTS.nofile
    assert job.reason.startswith("the script exited with code 1: OSError: [Errno 24]"), job.reason
    assert f"{DEFAULTS.nofile} open files (nofile)" in job.reason
    _assert_nothing_left(member, job)
    # the server is unaffected: its own limit is unchanged, and it answers
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == ours
    assert member.client.get_job(job.id).state == "FAILED"


def test_a_job_past_its_process_limit_says_so(member: Member, tmp_path: Path) -> None:
    job, out = _run_job(member, tmp_path, THREADS)
    assert job.state == "FAILED", (job.reason, out)
    assert DEFAULTS.pids_max is not None
    started = int(out.split("started ", 1)[1].split()[0])
    assert started < DEFAULTS.pids_max
    assert job.reason == (
        f"the script exited with code 1: process limit reached: {DEFAULTS.pids_max} processes "
        "and threads (the sandbox's pids_max); start fewer"
    )
    _assert_nothing_left(member, job)


ALLOCATE_ON_REQUEST = """
    import allspark

    class Hog(allspark.BaseProcessor):
        def process(self, data):
            blocks = []
            while True:
                blocks.append(bytearray(16 * 1024 * 1024))
"""


def test_an_instance_past_its_memory_is_killed_and_the_service_says_so(
    member: Member,
) -> None:
    client = member.client
    service = deploy_processor(
        client,
        "hog",
        member.code / "hog",
        ALLOCATE_ON_REQUEST,
        project=member.project,
        metadata={"memory": 300},
    )
    [instance] = service.instances
    with pytest.raises(httpx.HTTPError):
        httpx.post(service.endpoint, content=b"x", timeout=60).raise_for_status()

    def crashed() -> bool:
        events = client.service_events("hog")
        return any("crashed" in e.message and instance.id in e.message for e in events)

    wait_until(crashed, "the instance's crash among the service's events", timeout_s=60)
    [event] = [e for e in client.service_events("hog") if "crashed" in e.message]
    assert event.level == "error"
    assert "out of memory" in event.message
    assert "300 MB" in event.message
    assert "metadata.memory" in event.message
    client.delete_service("hog")
    client.wait_service_deleted("hog", timeout_s=60)
    assert workload_cgroups(f"instance-{instance.id}") == []
