"""Training jobs end to end on the local backend: real supervisor and script processes."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import psutil
import pytest

from liqi.client import Client
from liqi.errors import BucketNotFoundError, NotFoundError
from tests.support.servers import LiveServer, live_server
from tests.support.waiting import wait_until


def add_script(client: Client, tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return client.add_resource(path, force=True).uri


def run_job(client: Client, script: str, timeout_s: float = 90, **options: object):  # type: ignore[no-untyped-def]
    job = client.submit_job(script, **options)
    return client.wait_job(job.id, timeout_s=timeout_s)


def logs(client: Client, job_id: str) -> str:
    return "".join(client.follow_logs(job_id, follow=False))


HELD = """
    import os, sys, time
    print({first!r}, flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists("release"):
        if time.monotonic() > deadline:
            sys.exit("the test never released this job")
        time.sleep(0.02)
    print("done", flush=True)
"""


def held_job(first: str) -> str:
    """A job that prints ``first``, then waits until the test calls :func:`release` (a job
    cannot run ahead of the test's checks, however loaded the machine) and prints "done"."""
    return HELD.format(first=first)


def release(home: Path, job_id: str) -> None:
    """Let a held job go on: a file in its working folder, the only place of the machine a
    sandboxed job sees besides its inputs."""
    (home / "jobs" / job_id / "work" / "release").touch()


WRITER = """
    import argparse, os, sys
    parser = argparse.ArgumentParser()
    parser.add_argument("--buckets")
    parser.add_argument("--greeting", default="hello")
    args, _ = parser.parse_known_args()
    print("job", os.environ["LIQI_JOB_ID"], "says", args.greeting, flush=True)
    os.makedirs(os.path.join(args.buckets, "1"), exist_ok=True)
    with open(os.path.join(args.buckets, "1", "model.txt"), "w") as fh:
        fh.write("weights")
    if os.environ.get("FAIL_AFTER_WRITE"):
        sys.exit(3)
"""


def test_job_runs_and_uploads_outputs_on_success(server: LiveServer, tmp_path: Path) -> None:
    with server.admin() as admin:
        admin.create_bucket("models", project="default")
        admin.put_object("models", "out/old.txt", b"kept")
        script = add_script(admin, tmp_path, "writer.py", WRITER)
        job = run_job(admin, script, buckets=["oss://models/out/"], args=["--greeting=ni-hao"])
        assert job.state == "SUCCEEDED", (job.reason, logs(admin, job.id))
        assert job.exit_code == 0
        assert job.peak_rss_mb is not None
        assert f"job {job.id} says ni-hao" in logs(admin, job.id)
        assert admin.read_object("models", "out/1/model.txt") == b"weights"
        assert admin.read_object("models", "out/old.txt") == b"kept"
        assert [j.id for j in admin.list_jobs()] == [job.id]


def test_failed_job_leaves_the_bucket_unchanged(sqlite_server: LiveServer, tmp_path: Path) -> None:
    with sqlite_server.admin() as admin:
        admin.create_bucket("models", project="default")
        script = add_script(admin, tmp_path, "writer.py", WRITER)
        job = run_job(admin, script, buckets=["oss://models/out/"], env={"FAIL_AFTER_WRITE": "1"})
        assert job.state == "FAILED"
        assert job.exit_code == 3
        assert "exited with code 3" in job.reason
        assert list(admin.iter_objects("models")) == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("def broken(:\n    pass\n", "SyntaxError"),
        ("raise RuntimeError('boom from the script')\n", "RuntimeError: boom from the script"),
    ],
    ids=["syntax-error", "exception"],
)
def test_script_errors_fail_the_job_with_the_traceback_in_its_logs(
    sqlite_server: LiveServer, tmp_path: Path, body: str, expected: str
) -> None:
    with sqlite_server.admin() as admin:
        script = add_script(admin, tmp_path, "bad.py", body)
        job = run_job(admin, script)
        assert job.state == "FAILED"
        assert job.exit_code == 1
        assert expected in logs(admin, job.id)


def test_timeout_is_enforced(sqlite_server: LiveServer, tmp_path: Path) -> None:
    with sqlite_server.admin() as admin:
        script = add_script(
            admin,
            tmp_path,
            "hang.py",
            "import time\nprint('hanging', flush=True)\ntime.sleep(600)\n",
        )
        job = run_job(admin, script, resources={"timeout_s": 1.5})
        assert job.state == "FAILED"
        assert "timed out after 1.5 s" in job.reason


def test_memory_limit_is_enforced(sqlite_server: LiveServer, tmp_path: Path) -> None:
    hog = """
        import time
        blocks = []
        for _ in range(200):
            blocks.append(bytearray(10 * 1024 * 1024))
            time.sleep(0.02)
        time.sleep(600)
    """
    with sqlite_server.admin() as admin:
        script = add_script(admin, tmp_path, "hog.py", hog)
        job = run_job(admin, script, resources={"memory_mb": 150})
        assert job.state == "FAILED"
        assert "memory limit exceeded" in job.reason
        assert job.peak_rss_mb is not None
        assert job.peak_rss_mb >= 150


def test_kill_cancels_a_running_job_and_uploads_nothing(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    body = """
        import argparse, os, time
        p = argparse.ArgumentParser(); p.add_argument("--buckets"); a, _ = p.parse_known_args()
        open(os.path.join(a.buckets, "partial.bin"), "w").write("half")
        print("started", flush=True)
        time.sleep(600)
    """
    with sqlite_server.admin() as admin:
        admin.create_bucket("models", project="default")
        script = add_script(admin, tmp_path, "long.py", body)
        job = admin.submit_job(script, buckets=["oss://models/"])
        for text in admin.follow_logs(job.id):
            if "started" in text:
                break
        admin.kill_job(job.id)
        final = admin.wait_job(job.id, timeout_s=60)
        assert final.state == "CANCELLED"
        assert list(admin.iter_objects("models")) == []


def test_logs_stream_while_the_job_runs(sqlite_server: LiveServer, tmp_path: Path) -> None:
    with sqlite_server.admin() as admin:
        script = add_script(admin, tmp_path, "held.py", held_job("first line"))
        job = admin.submit_job(script)
        seen = ""
        for text in admin.follow_logs(job.id):
            seen += text
            if "first line" in seen:
                break
        # The job cannot go on before the release: the first line came while it runs.
        assert admin.get_job(job.id).state == "RUNNING"
        assert "done" not in seen
        release(sqlite_server.home, job.id)
        final = admin.wait_job(job.id, timeout_s=60)
        assert final.state == "SUCCEEDED"
        assert "done" in logs(admin, job.id)


def test_bad_references_are_refused_at_submit(sqlite_server: LiveServer, tmp_path: Path) -> None:
    with sqlite_server.admin() as admin:
        admin.create_project("other_proj")
        admin.create_bucket("theirs", project="other_proj")
        key = admin.create_key(project="default", role="member")
        assert key.secret
        script = add_script(admin, tmp_path, "ok.py", "print('ok')\n")
    with sqlite_server.client(key.access_id, key.secret) as member:
        with pytest.raises(NotFoundError):
            member.submit_job("odps://default/resources/missing.py", project="default")
        with pytest.raises(NotFoundError):
            member.submit_job(
                script, project="default", datasets=["odps://algo_platform/volumes/mnist/nope"]
            )
        with pytest.raises(BucketNotFoundError):
            member.submit_job(script, project="default", buckets=["oss://nobucket/out/"])
        with pytest.raises(BucketNotFoundError) as caught:  # like a missing one: no grant
            member.submit_job(script, project="default", buckets=["oss://theirs/out/"])
        assert "other_proj" not in caught.value.message
        assert member.list_jobs() == []


def test_datasets_are_staged_read_only(sqlite_server: LiveServer, tmp_path: Path) -> None:
    body = """
        import argparse, os
        p = argparse.ArgumentParser(); p.add_argument("--volumes"); a, _ = p.parse_known_args()
        for d in a.volumes.split(","):
            print(os.path.basename(d), sorted(os.listdir(d)))
        target = os.path.join(a.volumes.split(",")[0], "train-labels-idx1-ubyte.gz")
        print("writable:", os.access(target, os.W_OK) and os.geteuid() != 0)
    """
    with sqlite_server.admin() as admin:
        script = add_script(admin, tmp_path, "ls.py", body)
        volumes = [
            "odps://algo_platform/volumes/mnist/train",
            "odps://algo_platform/volumes/mnist/test",
        ]
        job = run_job(admin, script, datasets=volumes)
        assert job.state == "SUCCEEDED", logs(admin, job.id)
        out = logs(admin, job.id)
        assert "train ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']" in out
        assert "test ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']" in out


def test_jobs_survive_a_control_plane_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # the jobs run until the second control plane is up and releases them
    with live_server(home, None) as first, first.admin() as admin:
        script = add_script(admin, tmp_path, "restart.py", held_job("working"))
        kept = admin.submit_job(script)
        doomed = admin.submit_job(script)
        wait_until(
            lambda: all(admin.get_job(j.id).state == "RUNNING" for j in (kept, doomed)),
            f"jobs {kept.id} and {doomed.id} to run",
            timeout_s=60,
            interval_s=0.05,
        )
    # The control plane is down; the doomed job's supervisor dies meanwhile.
    job_dir = str(home / "jobs" / doomed.id)
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if job_dir in cmdline and "liqi.training.supervisor" in cmdline:
            for member in [*proc.children(recursive=True), proc]:
                with contextlib.suppress(psutil.NoSuchProcess):  # a task dies with its bwrap
                    member.kill()
    with live_server(home, None) as second, second.admin() as admin:
        release(home, kept.id)
        assert admin.wait_job(kept.id, timeout_s=60).state == "SUCCEEDED"
        assert "done" in logs(admin, kept.id)
        lost = admin.wait_job(doomed.id, timeout_s=30)
        assert lost.state == "LOST"
        assert "gone without a result" in lost.reason


def test_job_writing_nothing_succeeds_with_a_warning_when_a_model_was_expected(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    with sqlite_server.admin() as admin:
        admin.create_bucket("models", project="default")
        admin.put_object("models", "out/existing.txt", b"same")
        script = add_script(admin, tmp_path, "noop.py", "print('nothing to write')\n")
        job = run_job(admin, script, buckets=["oss://models/out/"], model_name="mnist")
        assert job.state == "SUCCEEDED"
        assert "no SavedModel was written (model 'mnist')" in job.reason
        assert [o.key for o in admin.iter_objects("models")] == ["out/existing.txt"]
        assert admin.list_models() == []
