"""Distributed TensorFlow jobs through `liqi pai -Dcluster=...`, with the real examples.

A TF 1 between-graph job (a parameter server and two workers) and a TF 2
MultiWorkerMirroredStrategy job (two workers) train on the MNIST volume; a cluster whose
worker fails ends FAILED with its other tasks stopped.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.cli.test_cli_commands import run
from tests.support.servers import LiveServer

pytestmark = pytest.mark.tf
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "distributed"
VOLUMES = (
    "-Dvolumes=odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test"
)
PS_AND_WORKERS = '-Dcluster={"ps":{"count":1},"worker":{"count":2}}'


def last_job(home: Path) -> str:
    jobs = json.loads(run(home, "job", "list", "-o", "json").output)
    return str(jobs[0]["id"])


def task_log(home: Path, job_id: str, task: str) -> str:
    result = run(home, "job", "logs", job_id, "--task", task)
    assert result.exit_code == 0, result.output
    return result.output


def accuracy_in(log: str) -> float:
    found = re.search(r"^accuracy: ([0-9.]+)$", log, re.MULTILINE)
    assert found, log
    return float(found.group(1))


def pid_in(log: str) -> int:
    found = re.search(r"\(pid (\d+)\)", log)
    assert found, log
    return int(found.group(1))


def processes_in(home: Path, job_id: str) -> list[int]:
    """Live processes working in the job's folder: its tasks (sandboxed or not, whose own pid
    may be their namespace's), and whatever they started."""
    folder = str(home / "jobs" / job_id / "work")
    found = []
    for process in psutil.process_iter(["cwd", "status"]):
        if process.info.get("cwd") == folder and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


def still_running(pid: int, script: str) -> bool:
    """Whether the task process ``pid`` (running ``script``) is alive; not fooled by a reused
    pid or by a zombie."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and any(
            script in part for part in process.cmdline()
        )
    except psutil.NoSuchProcess:
        return False


def run_tf1_between_graph_job(home: Path, *options: str) -> str:
    """`liqi pai` the TF1 between-graph example (``options``: more -D flags) and check that
    it trained and that its parameter server was stopped; the job's id."""
    script = EXAMPLES / "mnist_between_graph_tf1.py"
    assert run(home, "resource", "add", str(script)).exit_code == 0
    result = run(home, "pai", "-name", "tensorflow",
                 f"-Dscript=odps://default/resources/{script.name}", VOLUMES,
                 PS_AND_WORKERS, *options)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.stderr
    job_id = last_job(home)
    assert json.loads(run(home, "job", "status", job_id, "-o", "json").output)["state"] == (
        "SUCCEEDED"
    )

    chief = task_log(home, job_id, "chief")
    assert re.search(r"^worker 0 ran \d+ of 600 steps$", chief, re.MULTILINE), chief
    assert accuracy_in(chief) > 0.8
    other = task_log(home, job_id, "worker:1")
    assert re.search(r"^worker 1 ran \d+ of 600 steps$", other, re.MULTILINE), other
    assert "accuracy:" not in other  # only the chief evaluates
    # The ps blocks in server.join() for ever: the job ended because liqi stopped it.
    ps = task_log(home, job_id, "ps:0")
    assert "ps 0 serving the variables" in ps
    assert not still_running(pid_in(ps), script.name)
    assert processes_in(home, job_id) == []
    return job_id


@pytest.mark.timeout(300)
def test_tf1_between_graph_job_trains_and_stops_its_parameter_server(
    sqlite_server: LiveServer,
) -> None:
    run_tf1_between_graph_job(sqlite_server.home)


def run_tf2_multi_worker_mirrored_job(home: Path, *options: str) -> str:
    """`liqi pai` the TF2 MultiWorkerMirroredStrategy example on two workers (``options``:
    more -D flags) and check that both trained; the job's id."""
    script = EXAMPLES / "mnist_multiworker_tf2.py"
    assert run(home, "resource", "add", str(script)).exit_code == 0
    result = run(home, "pai", "-name", "tensorflow2",
                 f"-Dscript=odps://default/resources/{script.name}", VOLUMES,
                 '-Dcluster={"worker":{"count":2}}', *options)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.stderr
    job_id = last_job(home)
    assert json.loads(run(home, "job", "status", job_id, "-o", "json").output)["state"] == (
        "SUCCEEDED"
    )

    chief = task_log(home, job_id, "chief")
    assert "worker 0 of 2 joined" in chief
    assert accuracy_in(chief) > 0.8
    other = task_log(home, job_id, "worker:1")
    assert "worker 1 of 2 joined" in other
    assert re.search(r"^worker 1 ran \d+ epochs of \d+ steps$", other, re.MULTILINE), other
    assert "accuracy:" not in other
    return job_id


@pytest.mark.timeout(300)
def test_tf2_multi_worker_mirrored_job_trains_on_two_workers(sqlite_server: LiveServer) -> None:
    run_tf2_multi_worker_mirrored_job(sqlite_server.home)


FAILING_WORKER = """
    import json, os, sys, time
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    name = f"{task['type']}-{task['index']}"
    print(f"{name} started (pid {os.getpid()})", flush=True)
    open(name + ".started", "w").close()  # the tasks share their working directory
    if name == "worker-1":
        while not (os.path.exists("worker-0.started") and os.path.exists("ps-0.started")):
            time.sleep(0.05)
        print("worker 1 gives up", flush=True)
        sys.exit(1)
    time.sleep(600)  # the chief and the ps would run on: liqi must stop them
"""


@pytest.mark.timeout(300)
def test_a_failing_worker_fails_the_job_and_stops_the_other_tasks(
    sqlite_server: LiveServer, tmp_path: Path
) -> None:
    home = sqlite_server.home
    script = tmp_path / "failing_worker.py"
    script.write_text(textwrap.dedent(FAILING_WORKER))
    assert run(home, "resource", "add", str(script)).exit_code == 0
    result = run(home, "pai", "-name", "tensorflow",
                 f"-Dscript=odps://default/resources/{script.name}", PS_AND_WORKERS)  # fmt: skip
    assert result.exit_code == 8, result.output
    assert "FAILED" in result.stderr
    job_id = last_job(home)
    status = json.loads(run(home, "job", "status", job_id, "-o", "json").output)
    assert status["state"] == "FAILED"
    assert "task worker:1 exited with code 1" in status["reason"]

    assert "worker 1 gives up" in task_log(home, job_id, "worker:1")
    for task in ("worker:0", "ps:0"):
        log = task_log(home, job_id, task)
        assert "started" in log
        assert not still_running(pid_in(log), script.name), task
    assert processes_in(home, job_id) == []
