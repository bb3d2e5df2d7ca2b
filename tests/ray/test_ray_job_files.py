"""A job on Ray gets its files through liqi's store, not through a disk the node shares with
the control plane: it runs in a folder of the node's own, reads what was staged, and what it
wrote comes back and is uploaded; the ticket its entrypoint shows is spent, its key revoked
when it ends, its staged tar removed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from liqi.backends.job_files import CLAIM_PATH
from liqi.backends.ray_jobs import RayJobBackend, submission_id
from liqi.control.db.tables import AccessKey
from liqi.control.jobs.shipping import workload
from tests.support.ray_head import RayHead
from tests.support.servers import LiveServer

pytestmark = pytest.mark.timeout(180)

UPPER = """
    import argparse, os
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets")
    args, _ = parser.parse_known_args()
    print("cwd", os.getcwd(), flush=True)
    print("env", sorted(k for k in os.environ if k.startswith("LIQI_")), flush=True)
    with open(os.path.join(args.buckets, "in.txt")) as fh:
        text = fh.read()
    with open(os.path.join(args.buckets, "out.txt"), "w") as fh:
        fh.write(text.upper())
"""


def test_a_ray_job_runs_from_its_files_fetched_through_the_store(
    ray_server: LiveServer, ray_head: RayHead, tmp_path: Path
) -> None:
    script = tmp_path / "upper.py"
    script.write_text(textwrap.dedent(UPPER))
    with ray_server.admin() as admin:
        admin.create_bucket("data", project="default")
        admin.put_object("data", "run/in.txt", b"staged input")
        staged = admin.stat_object("data", "run/in.txt")
        uri = admin.add_resource(script, force=True).uri
        job = admin.submit_job(uri, buckets=["oss://data/run/"])
        done = admin.wait_job(job.id, timeout_s=120)
        logs = "".join(admin.follow_logs(job.id, follow=False))
        assert done.state == "SUCCEEDED", (done.reason, logs)
        assert done.reason == "uploaded 1 file(s) to the buckets"
        assert admin.read_object("data", "run/out.txt") == b"STAGED INPUT"
        # The file it only read is not written again.
        assert admin.stat_object("data", "run/in.txt").modified_at == staged.modified_at
    cwd = logs.splitlines()[0].removeprefix("cwd ")
    home = str(ray_server.home)
    assert not cwd.startswith(home), logs
    assert cwd.endswith("/job/work"), logs
    # The task sees no credential of liqi's: the driver's key stays in the driver.
    assert "LIQI_ACCESS" not in logs.splitlines()[1], logs
    job_dir = ray_server.home / "jobs" / job.id
    assert sorted(p.name for p in job_dir.iterdir()) == [
        "buckets",  # what the job sent back, uploaded from here
        "logs",
        "manifest.json",
        "plan.json",
        "result.json",
    ]
    assert not (ray_server.home / "store" / "_jobs" / job.id).exists()

    # What `ray job list` shows anyone who can reach the cluster: a ticket, never a key, and
    # a ticket already spent.
    info = RayJobBackend(ray_head.dashboard_url).client().get_job_info(submission_id(job.id))
    entrypoint = info.entrypoint
    assert "--ticket=" in entrypoint
    ticket = entrypoint.split("--ticket=", 1)[1].split()[0].strip("'")
    plane = ray_server.plane
    assert plane is not None
    with plane.sessions() as session:
        keys = session.scalars(select(AccessKey).where(AccessKey.workload == workload(job.id)))
        (key,) = keys.all()
        assert key.revoked_at is not None  # revoked when the job ended
        assert key.access_id not in entrypoint
        assert key.access_id not in logs
    again = httpx.post(ray_server.url + CLAIM_PATH, json={"ticket": ticket}, trust_env=False)
    assert again.status_code == 401, again.text
