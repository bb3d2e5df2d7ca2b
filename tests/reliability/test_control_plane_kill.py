"""The control plane SIGKILLed mid-change and started again on the same LIQI_HOME: what it
was doing is finished, undone or never visible; nothing is left half-written or orphaned.

One real ``liqi server run`` process per module (isolation none, SQLite, no standby model
server), killed and restarted by each test; the SDK reaches it through the admin profile it
rewrites on start. liqi has no multipart upload (an object is one streamed PUT): the
single-part case covers objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from liqi.client import Client
from liqi.control.server.home import ServerRecord
from liqi.core import signing
from liqi.errors import LiqiError, NotFoundError
from tests.support.servers import instance_folder, kill_instances, wait_healthy
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(240)

PROJECT = "default"
BUCKET = "kill-data"
MB = 2**20


class ServerProcess:
    """``liqi server run`` on port 0 in a process of its own, for a test to SIGKILL."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
        env["LIQI_HOME"] = str(self.home)
        env["LIQI_STANDBY"] = "0"  # no TensorFlow import per start: instances start cold
        command = [sys.executable, "-m", "liqi", "--home", str(self.home), "server", "run"]
        command += ["--port", "0", "--isolation", "none"]
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server-output.log", "ab") as log:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        record_file = self.home / "run" / "server.json"
        pid = self.process.pid

        def listening() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, self.output()
            record = ServerRecord.read(record_file) if record_file.exists() else None
            return record is not None and record.pid == pid

        wait_until(listening, "the control plane wrote run/server.json", timeout_s=60)
        record = ServerRecord.read(record_file)
        assert record is not None
        self.url = record.url
        wait_healthy(self.url, timeout_s=60)

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no rollback runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
            self.process = None

    def output(self) -> str:
        path = self.home / "server-output.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def client(self) -> Client:
        return Client(environ={"LIQI_HOME": str(self.home)})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("cpkill") / "home"
    live = ServerProcess(home)
    live.start()
    try:
        with live.client() as admin:
            admin.create_bucket(BUCKET, project=PROJECT)
        yield live
    finally:
        live.stop()
        kill_instances(home)
        for pid in processes_under(home / "jobs"):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


def processes_under(folder: Path) -> list[int]:
    """Live processes whose working folder or an argument is ``folder`` or under it."""
    prefix = str(folder) + "/"
    found = []
    for process in psutil.process_iter(["cwd", "cmdline", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        paths = [process.info.get("cwd") or "", *(process.info.get("cmdline") or ())]
        if any(p == str(folder) or p.startswith(prefix) for p in paths):
            found.append(process.pid)
    return found


def temp_files(server: ServerProcess) -> list[Path]:
    """The store's temporary files (uploads under way, or left by a killed server)."""
    tmp = server.home / "store" / "_tmp"
    return sorted(p for p in tmp.iterdir() if p.is_file()) if tmp.is_dir() else []


def keys(client: Client, bucket: str = BUCKET, prefix: str = "") -> list[str]:
    return [info.key for info in client.iter_objects(bucket, prefix)]


# -- 1. a single-part object upload ------------------------------------------------------------


def test_an_upload_killed_mid_body_leaves_no_object_and_the_key_can_be_written_again(
    server: ServerProcess,
) -> None:
    body = os.urandom(8 * MB)
    half = 4 * MB
    killed = threading.Event()
    failures: list[BaseException] = []

    def chunks() -> Iterator[bytes]:
        for start in range(0, half, MB):
            yield body[start : start + MB]
        killed.wait(timeout=60)  # the rest only once the server is gone
        for start in range(half, len(body), MB):
            yield body[start : start + MB]

    def upload() -> None:
        headers = {
            "content-type": "application/octet-stream",
            "content-length": str(len(body)),
            signing.CONTENT_HASH_HEADER: hashlib.sha256(body).hexdigest(),
        }
        try:
            with server.client() as client:
                client._request(
                    "PUT", f"/api/v1/buckets/{BUCKET}/objects/big/blob.bin",
                    content=chunks(), headers=headers,
                )  # fmt: skip
        except BaseException as exc:  # the thread reports what it met
            failures.append(exc)

    uploader = threading.Thread(target=upload, daemon=True)
    uploader.start()

    def half_written() -> bool:
        return any(p.stat().st_size >= MB for p in temp_files(server))

    wait_until(half_written, "part of the body written to a temporary file", timeout_s=30)
    server.kill()
    killed.set()
    uploader.join(timeout=60)
    assert not uploader.is_alive()
    assert len(failures) == 1
    assert isinstance(failures[0], LiqiError), failures
    server.start()
    with server.client() as client:
        with pytest.raises(NotFoundError):
            client.stat_object(BUCKET, "big/blob.bin")
        listed = keys(client)
        assert "big/blob.bin" not in listed
        assert not [k for k in listed if "liqi-put" in k or k.startswith("_tmp")], listed
        assert temp_files(server) == []  # the killed server's temp file is gone too
        info = client.put_object(BUCKET, "big/blob.bin", body)
        assert info.size == len(body)
        assert client.read_object(BUCKET, "big/blob.bin") == body


# -- 2. multipart uploads: liqi's API has none (one PUT per object, streamed) ----------------


# -- 3. a dataset upload ---------------------------------------------------------------------


def test_a_dataset_upload_killed_midway_publishes_no_partition(
    server: ServerProcess, tmp_path: Path
) -> None:
    uri = f"odps://{PROJECT}/volumes/killed_volume/p1"
    source = tmp_path / "dataset"
    source.mkdir()
    for index in range(6):
        (source / f"part-{index}.bin").write_bytes(bytes([index]) * MB)
    files = sorted(source.iterdir())
    upload = "killedupload01"
    with server.client() as client:
        for path in files[:3]:
            client.upload_dataset_file(uri, upload, path.name, path)
    server.restart()
    with server.client() as client:
        with pytest.raises(NotFoundError):
            client.describe_dataset(uri)
        assert uri not in [d.uri for d in client.list_datasets(PROJECT)]
        # the half upload cannot be published after the restart either
        with pytest.raises(LiqiError):
            client.commit_dataset_upload(uri, upload, file_count=6, size=6 * MB)
        with pytest.raises(NotFoundError):
            client.describe_dataset(uri)
        made = client.create_dataset(uri, source)
        assert made.version == 1
        listed = client.list_dataset_files(uri)
        assert sorted(f.path for f in listed) == [p.name for p in files]
        assert sum(f.size for f in listed) == 6 * MB


# -- 4. running jobs -------------------------------------------------------------------------

HELD = """
import os, sys, time
deadline = time.monotonic() + 120
while not os.path.exists("release"):
    if time.monotonic() > deadline:
        sys.exit("the test never released this job")
    time.sleep(0.02)
print("released", flush=True)
"""


def add_script(client: Client, tmp: Path, name: str, body: str) -> str:
    path = tmp / name
    path.write_text(body)
    return client.add_resource(path, project=PROJECT, force=True).uri


def release(server: ServerProcess, job_id: str) -> None:
    (server.home / "jobs" / job_id / "work" / "release").touch()


def supervisor_pid(server: ServerProcess, job_id: str) -> int:
    return int((server.home / "jobs" / job_id / "supervisor.pid").read_text())


def wait_state(client: Client, job_id: str, state: str) -> None:
    wait_until(
        lambda: client.get_job(job_id).state == state,
        f"job {job_id} {state}",
        timeout_s=60,
        interval_s=0.05,
    )


def test_running_jobs_are_reattached_or_lost_with_a_reason_and_leave_no_process(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as client:
        script = add_script(client, tmp_path, "held.py", HELD)
        kept = client.submit_job(script, name="kept").id
        orphaned = client.submit_job(script, name="orphaned").id
        wait_state(client, kept, "RUNNING")
        wait_state(client, orphaned, "RUNNING")
    jobs = server.home / "jobs"
    kept_processes = set(processes_under(jobs / kept))
    assert supervisor_pid(server, kept) in kept_processes
    server.kill()
    # the supervisors are detached: they outlive the control plane
    assert set(processes_under(jobs / kept)) == kept_processes
    # one of them dies with it, its script too, while no control plane watches
    for pid in processes_under(jobs / orphaned):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    wait_until(lambda: not processes_under(jobs / orphaned), "the orphaned job's processes gone")
    server.start()
    with server.client() as client:
        lost = client.wait_job(orphaned, timeout_s=60)
        assert lost.state == "LOST"
        assert "supervisor" in lost.reason
        assert client.get_job(kept).state == "RUNNING"  # re-attached, not lost
        release(server, kept)
        done = client.wait_job(kept, timeout_s=60)
        assert done.state == "SUCCEEDED", done.reason
        assert "released" in "".join(client.follow_logs(kept, follow=False))
    wait_until(lambda: not processes_under(jobs), "no process left under LIQI_HOME/jobs")


# -- 7. a job submission ---------------------------------------------------------------------


def test_a_job_submitted_just_before_the_kill_runs_to_its_end_once(
    server: ServerProcess, tmp_path: Path
) -> None:
    jobs = server.home / "jobs"
    with server.client() as client:
        script = add_script(client, tmp_path, "held7.py", HELD)
        job_id = client.submit_job(script, name="submitted").id
    # killed as the runner launches it: between its supervisor's start and its RUNNING row,
    # if the kill lands there
    wait_until(lambda: (jobs / job_id / "supervisor.pid").exists(), "the job launched")
    server.kill()
    launched = processes_under(jobs / job_id)
    server.start()
    with server.client() as client:
        wait_state(client, job_id, "RUNNING")
        supervisors = [
            p for p in processes_under(jobs / job_id) if "supervisor" in " ".join(
                psutil.Process(p).cmdline())
        ]  # fmt: skip
        assert len(supervisors) == 1, (launched, supervisors)
        release(server, job_id)
        done = client.wait_job(job_id, timeout_s=60)
        assert done.state == "SUCCEEDED", done.reason
    wait_until(lambda: not processes_under(jobs), "no process left under LIQI_HOME/jobs")


# -- 5. a job's output upload ----------------------------------------------------------------

WRITER = """
import os, shutil
root = os.environ["LIQI_BUCKETS"].split(",")[0]
for i in range(int(os.environ["OUTPUTS"])):
    with open(os.path.join(root, f"f{i:02d}.bin"), "wb") as fh:
        fh.write(bytes([i]) * (1 << 20))
if os.environ.get("CLASH"):  # a file where the bucket holds a folder: its upload fails
    shutil.rmtree(os.path.join(root, "zz-clash"))
    with open(os.path.join(root, "zz-clash"), "wb") as fh:
        fh.write(b"a file")
"""
OUTPUTS = 40


def contents(client: Client, prefix: str) -> dict[str, bytes]:
    return {key: client.read_object(BUCKET, key) for key in keys(client, prefix=prefix)}


def kill_during_output_upload(
    server: ServerProcess, client: Client, tmp_path: Path, prefix: str, **env: str
) -> tuple[str, int]:
    """Run WRITER with its bucket folder at ``prefix``, SIGKILL the control plane as soon as
    its first output is in the bucket; returns the job's id and the outputs then written."""
    script = add_script(client, tmp_path, f"writer-{prefix.strip('/')}.py", WRITER)
    job_id = client.submit_job(
        script, name="writer", buckets=[f"oss://{BUCKET}/{prefix}"],
        env={"OUTPUTS": str(OUTPUTS), **env},
    ).id  # fmt: skip
    folder = server.home / "store" / BUCKET / prefix

    def written() -> int:  # the job's outputs (1 MB each) now in the bucket
        names = (folder / f"f{i:02d}.bin" for i in range(OUTPUTS))
        return sum(1 for path in names if path.exists() and path.stat().st_size == MB)

    wait_until(written, "the first output in the bucket", timeout_s=90, interval_s=0.001)
    server.kill()
    return job_id, written()


def test_outputs_being_uploaded_at_the_kill_are_all_uploaded_after_the_restart(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as client:
        job_id, at_kill = kill_during_output_upload(server, client, tmp_path, "out5a/")
    print(f"killed after {at_kill} of {OUTPUTS} outputs were in the bucket")
    assert 0 < at_kill < OUTPUTS  # the kill fell mid-upload
    server.start()
    with server.client() as client:
        done = client.wait_job(job_id, timeout_s=60)
        assert done.state == "SUCCEEDED", done.reason
        assert f"uploaded {OUTPUTS} file(s)" in done.reason
        expected = {f"out5a/f{i:02d}.bin": bytes([i]) * MB for i in range(OUTPUTS)}
        assert contents(client, "out5a/") == expected


def test_outputs_whose_upload_fails_after_the_restart_leave_the_bucket_as_it_was(
    server: ServerProcess, tmp_path: Path
) -> None:
    with server.client() as client:
        client.put_object(BUCKET, "out5b/f03.bin", b"old three")
        client.put_object(BUCKET, "out5b/zz-clash/inner.txt", b"inner")
        before = contents(client, "out5b/")
        job_id, at_kill = kill_during_output_upload(server, client, tmp_path, "out5b/", CLASH="1")
    print(f"killed after {at_kill} of {OUTPUTS} outputs were in the bucket")
    assert 0 < at_kill < OUTPUTS
    server.start()
    with server.client() as client:
        done = client.wait_job(job_id, timeout_s=60)
        assert done.state == "FAILED"
        assert "uploading its outputs failed" in done.reason
        assert contents(client, "out5b/") == before  # none of the outputs: all or nothing


# -- 6. services: create, scale, modify mid-rollout, delete ----------------------------------


def service_processes(server: ServerProcess) -> dict[int, str]:
    """The processes working under LIQI_HOME/services (instances and standbys, sandboxed or
    not: bwrap's own init aside), with the folder each works in."""
    prefix = str(server.home / "services") + "/"
    found = {}
    for process in psutil.process_iter(["status", "name"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or process.info["name"] == "bwrap":
            continue
        folder = instance_folder(process.pid) or ""
        if folder.startswith(prefix):
            found[process.pid] = folder
    return found


def assert_no_orphan_instance(server: ServerProcess, client: Client) -> None:
    """Every process under LIQI_HOME/services is an instance of a service the control plane
    knows, or a standby: the new control plane's, or a killed one's on its way out (it ends
    at the end of its stdin, once its imports are done)."""
    assert server.process is not None
    plane = server.process.pid
    known = {i.id for s in client.list_services() for i in client.get_service(s.name).instances}
    for pid, folder in service_processes(server).items():
        if Path(folder).name not in known:
            assert "/.standby/" in folder + "/", f"orphan process {pid} in {folder}"

    def killed_planes_standbys() -> list[int]:
        found = []
        for pid, folder in service_processes(server).items():
            with contextlib.suppress(psutil.NoSuchProcess):
                if Path(folder).name not in known and psutil.Process(pid).ppid() != plane:
                    found.append(pid)
        return found

    wait_until(
        lambda: not killed_planes_standbys(),
        "the killed control plane's standbys ended",
        timeout_s=90,
        interval_s=0.2,
    )


def wait_running(client: Client, name: str, instances: int) -> None:
    info = client.wait_service(name, timeout_s=120)
    assert info.state == "RUNNING", f"{name} is {info.state}: {info.reason}"
    assert info.instances_ready == info.instances_wanted == instances
    assert len(info.instances) == instances


def test_a_service_killed_after_each_change_converges_and_leaves_no_orphan_instance(
    server: ServerProcess, mnist_saved_model: Path
) -> None:
    name = "killed_svc"
    spec = {
        "name": name,
        "generate_token": "false",
        "model_path": f"oss://{BUCKET}/models/",
        "processor": "tensorflow_cpu",
        "metadata": {"instance": 1, "cpu": 1, "memory": 2000},
    }
    with server.client() as client:
        for path in sorted(mnist_saved_model.rglob("*")):
            if path.is_file():
                key = f"models/1/{path.relative_to(mnist_saved_model)}"
                client.put_object(BUCKET, key, path)
        # create, killed right after the answer: the service exists and comes up
        assert client.create_service(spec, project=PROJECT).current_version == 1
    server.restart()
    with server.client() as client:
        wait_running(client, name, 1)
        assert_no_orphan_instance(server, client)
        # modify, killed while the new version's instance starts
        modified = client.modify_service(name, {"metadata": {"memory": 1900}})
        new = modified.latest_version
        assert new == 2

        def rolling() -> bool:
            info = client.get_service(name)
            return any(i.version == new for i in info.instances)

        wait_until(rolling, "an instance of the new version started", timeout_s=60)
    server.restart()
    with server.client() as client:
        wait_running(client, name, 1)
        info = client.get_service(name)
        assert info.current_version == new
        assert {i.version for i in info.instances} == {new}
        assert info.memory_mb == 1900
        assert_no_orphan_instance(server, client)
        # scale, killed right after the answer
        assert client.scale_service(name, 2).instances_wanted == 2
    server.restart()
    with server.client() as client:
        wait_running(client, name, 2)
        assert_no_orphan_instance(server, client)
        # delete, killed right after the answer
        client.delete_service(name)
    server.restart()
    with server.client() as client:
        client.wait_service_deleted(name, timeout_s=90)
        assert name not in [s.name for s in client.list_services()]
        wait_until(
            lambda: all("/.standby" in f for f in service_processes(server).values()),
            "every instance of the deleted service stopped",
            timeout_s=60,
        )
        assert_no_orphan_instance(server, client)
