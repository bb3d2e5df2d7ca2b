"""The database goes away under a running control plane: PostgreSQL stopped at once (as a crash
would) and started again, and a SQLite file held locked by another process for longer than the
server's busy timeout. API calls answer 503 ``database_unavailable`` with the reason (never a
500), nothing is half-written or corrupted, and once the database is back the API, the job
runner and the reconciler carry on by themselves, without a restart of liqi."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from liqi.client import Client
from liqi.errors import DatabaseUnavailableError
from tests.support.postgres import PostgresCluster
from tests.support.servers import LiveServer, kill_instances, live_server
from tests.support.waiting import wait_until
from tests.support.workloads import deploy_processor

pytestmark = pytest.mark.timeout(180)

ECHO = """
    import allspark

    class Echo(allspark.BaseProcessor):
        def process(self, data):
            return data, 200
"""
PREDICTIONS = 20

HELD = """
    import os, sys, time
    print("started", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists("release"):
        if time.monotonic() > deadline:
            sys.exit("the test never released this job")
        time.sleep(0.02)
    print("done", flush=True)
"""


def add_script(admin: Client, tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(textwrap.dedent(body))
    return admin.add_resource(path, force=True).uri


def start_held_job(server: LiveServer, admin: Client, tmp: Path) -> str:
    """A job that runs until :func:`release_job`; returns its id once it is RUNNING."""
    job = admin.submit_job(add_script(admin, tmp, "held.py", HELD))
    wait_until(
        lambda: admin.get_job(job.id).state == "RUNNING", "the held job running", timeout_s=60
    )
    return job.id


def release_job(server: LiveServer, job_id: str) -> None:
    """Let the held job end, and wait until its supervisor has written its result."""
    job_dir = server.home / "jobs" / job_id
    (job_dir / "work" / "release").touch()
    wait_until(lambda: (job_dir / "result.json").exists(), "the held job's result", timeout_s=60)


def tick_failures(caplog: pytest.LogCaptureFixture, thread: str = "liqi-job-runner") -> int:
    """How many ticks of the ticker thread ``thread`` failed (and were logged) so far."""
    return sum(r.threadName == thread and "tick failed" in r.getMessage() for r in caplog.records)


def supervisors(server: LiveServer, job_id: str) -> int:
    """How many job supervisors run for ``job_id`` (their command line names its folder)."""
    job_dir = str(server.home / "jobs" / job_id)
    count = 0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        count += "liqi.training.supervisor" in cmdline and job_dir in cmdline
    return count


def refused(call: Callable[[], object]) -> DatabaseUnavailableError:
    with pytest.raises(DatabaseUnavailableError) as caught:
        call()
    assert "database is unavailable" in caught.value.message, caught.value.message
    return caught.value


def check_recovered(server: LiveServer, admin: Client, held_id: str, tmp: Path) -> None:
    """The job that ended during the trouble is SUCCEEDED, a new job runs to SUCCEEDED, the
    bucket refused during the trouble does not exist and can be made, and the ticker threads
    are alive."""
    assert admin.wait_job(held_id, timeout_s=60).state == "SUCCEEDED"
    assert "during" not in {b.name for b in admin.list_buckets()}
    admin.create_bucket("during", project="default")
    after = admin.submit_job(add_script(admin, tmp, "after.py", "print('after')\n"))
    final = admin.wait_job(after.id, timeout_s=60)
    assert final.state == "SUCCEEDED", final.reason
    assert server.plane is not None
    for ticker in (server.plane.runner, server.plane.reconciler):
        thread = ticker._thread
        assert thread is not None
        assert thread.is_alive(), f"{thread.name} died"


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of this test's own: stopping the session's would break others."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.stop()  # fails (and still cleans up) when the test left it halted


@pytest.mark.postgres
def test_postgresql_stopped_mid_run_gives_503_and_the_server_recovers_by_itself(
    own_postgres: PostgresCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    url = own_postgres.create_database()
    home = tmp_path / "home"
    with (
        contextlib.ExitStack() as cleanup,
        live_server(home, url, standby=False) as server,
        server.admin() as admin,
    ):
        cleanup.callback(kill_instances, home)  # instances outlive the control plane
        admin.create_bucket("before", project="default")
        endpoint = deploy_processor(admin, "echo", tmp_path / "echo", ECHO).endpoint
        held = start_held_job(server, admin, tmp_path)

        own_postgres.halt()
        release_job(server, held)  # the job ends while the database is down
        wait_until(
            lambda: tick_failures(caplog) and tick_failures(caplog, "liqi-reconciler"),
            "a job runner tick and a reconciler tick failing",
            timeout_s=30,
        )
        # The gateway keeps serving a running service: it needs no database.
        answers = [
            httpx.post(endpoint, content=f"while down {i}".encode(), timeout=30, trust_env=False)
            for i in range(PREDICTIONS)
        ]
        assert [(a.status_code, a.content) for a in answers] == [
            (200, f"while down {i}".encode()) for i in range(PREDICTIONS)
        ]
        started = time.monotonic()
        error = refused(admin.list_buckets)
        refused_s = time.monotonic() - started
        refused(lambda: admin.create_bucket("during", project="default"))
        refused(lambda: admin.get_job(held))
        assert "cannot reach it" in error.message, error.message
        assert str(own_postgres.port) not in error.message  # the details stay in the log
        health = httpx.get(f"{server.url}/healthz", timeout=10, trust_env=False)
        assert health.status_code == 200

        own_postgres.resume()
        assert [b.name for b in admin.list_buckets()] == ["before"]
        check_recovered(server, admin, held, tmp_path)
        assert admin.get_service("echo").state == "RUNNING"
        assert httpx.post(endpoint, content=b"after", timeout=30, trust_env=False).content == (
            b"after"
        )
        admin.delete_service("echo")
        admin.wait_service_deleted("echo", timeout_s=60)
    print(f"503 database_unavailable in {refused_s * 1000:.0f} ms with PostgreSQL stopped")


HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
db.close()
"""


@contextlib.contextmanager
def locked(database: Path) -> Iterator[None]:
    """Another process holds ``BEGIN EXCLUSIVE`` on ``database`` until the block ends."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "locked"
            yield
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.wait(timeout=30) == 0
        finally:
            if holder.poll() is None:
                holder.kill()
                holder.wait(timeout=30)


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server on SQLite whose writes wait at most 1 s for a lock."""
    home = tmp_path_factory.mktemp("sqlite-locked") / "home"
    with live_server(home, None, standby=False, database_busy_timeout_s=1.0) as server:
        yield server


def test_a_sqlite_database_locked_by_another_process_gives_503_and_the_server_recovers(
    sqlite_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    server = sqlite_server
    with server.admin() as admin:
        database = server.home / "liqi.db"
        admin.create_bucket("before", project="default")
        held = start_held_job(server, admin, tmp_path)
        admin.list_buckets()  # the key's last use is fresh: reads below write nothing

        with locked(database):
            started = time.monotonic()
            error = refused(lambda: admin.create_bucket("during", project="default"))
            refused_s = time.monotonic() - started
            assert "held it locked" in error.message, error.message
            # WAL: readers are not blocked by a writer.
            assert [b.name for b in admin.list_buckets()] == ["before"]
            release_job(server, held)  # the job ends while its state cannot be written
            wait_until(lambda: tick_failures(caplog), "a job runner tick failing", timeout_s=30)
            refused(lambda: admin.create_project("during_lock"))

        check_recovered(server, admin, held, tmp_path)
        assert "during_lock" not in {p.name for p in admin.list_projects()}
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    print(f"503 database_unavailable in {refused_s * 1000:.0f} ms with SQLite locked")


def test_a_job_started_while_sqlite_is_locked_runs_once_and_is_recorded_when_the_lock_goes(
    sqlite_server: LiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    server = sqlite_server
    assert server.plane is not None
    runner = server.plane.runner
    capacity = runner.max_running
    with server.admin() as admin:
        script = add_script(admin, tmp_path, "held.py", HELD)
        runner.max_running = 0  # the job waits PENDING until the lock is taken
        job = admin.submit_job(script)
        try:
            admin.list_buckets()  # the key's last use is fresh: reads below write nothing
            with locked(server.home / "liqi.db"):
                runner.max_running = capacity
                # The runner launches the job, then cannot write that it runs, tick after tick.
                wait_until(
                    lambda: tick_failures(caplog) >= 3,
                    "three job runner ticks failing",
                    timeout_s=60,
                )
                assert admin.get_job(job.id).state == "PENDING"
                launched = supervisors(server, job.id)
            wait_until(
                lambda: admin.get_job(job.id).state == "RUNNING", "the job running", timeout_s=60
            )
            running = supervisors(server, job.id)
        finally:
            runner.max_running = capacity
            (server.home / "jobs" / job.id / "work" / "release").touch()
        assert (launched, running) == (1, 1), "the job was launched more than once"
        final = admin.wait_job(job.id, timeout_s=60)
        assert final.state == "SUCCEEDED", final.reason
