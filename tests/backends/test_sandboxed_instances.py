"""Instances in liqi.sandbox (isolation "sandbox"): the real MNIST SavedModel served from
bubblewrap, its cgroup named after the instance; start, ready, predict, adopt by a new
backend object, stop; killed with its cgroup; the cgroup's memory limit as the reason; a
sandboxed standby server that becomes the next instance."""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from liqi.backends.instances import InstanceHandle, InstancePhase, InstanceSpec
from liqi.backends.local_instances import LocalInstanceBackend, instance_cgroup
from liqi.control.services.staging import instance_sandbox
from liqi.sandbox import safe_env, sandbox_available, workload_user
from tests.backends.test_local_instances import predict, wait_phase

pytestmark = pytest.mark.timeout(180)

Started = list[tuple[InstanceHandle, InstanceSpec]]


@pytest.fixture(autouse=True)
def _require_sandbox() -> None:
    ok, reason = sandbox_available()
    assert ok, f"this machine cannot sandbox workloads: {reason}"


@pytest.fixture
def started() -> Iterator[Started]:
    """Sandboxed instances a test started: their cgroups are killed and removed at teardown."""
    instances: Started = []
    yield instances
    for handle, spec in instances:
        with contextlib.suppress(Exception):
            instance_cgroup(spec.instance_id, handle.ref.partition("@")[2] or None).remove()


def sandboxed_spec(tmp_path: Path, model_uri: str | Path, **fields: object) -> InstanceSpec:
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True, exist_ok=True)
    instance_id = f"mnist-{uuid.uuid4().hex[:8]}"
    spec = InstanceSpec(
        instance_id=instance_id,
        service="mnist",
        model_uri=str(model_uri),
        dir=str(home / "services" / "mnist" / instance_id),
        env={"LIQI_HOME": str(home)},
        **fields,  # type: ignore[arg-type]
    )
    user = workload_user("sbxinst")
    return instance_sandbox(spec, user, safe_env(os.environ), home, home / "cache")


def test_start_ready_predict_adopt_and_stop(
    mnist_saved_model: Path, tmp_path: Path, started: Started
) -> None:
    spec = sandboxed_spec(tmp_path, mnist_saved_model, token="s3cret", memory_mb=8000)
    assert spec.sandbox is not None
    assert spec.env["LIQI_HOME"] == "/instance/home"  # its folder, as it sees it
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    assert "s3cret" not in (Path(spec.dir) / "spec.json").read_text()
    assert InstanceSpec.from_json((Path(spec.dir) / "spec.json").read_text()) == spec.redacted()
    cgroup = instance_cgroup(spec.instance_id)
    ready = wait_phase(backend, handle, spec, InstancePhase.READY)
    assert ready.url is not None
    assert int(handle.ref) in cgroup.pids()  # the handle is bwrap's host pid, in the cgroup
    assert predict(ready.url).status_code == 401
    answer = predict(ready.url, "s3cret")
    assert answer.status_code == 200
    assert len(answer.json()["predictions"][0]) == 10
    log = (Path(spec.dir) / "instance.log").read_text()
    assert "cannot write" not in log  # the workload user owns its log, to write and rotate
    assert "mnist" in log

    adopted = LocalInstanceBackend()  # a restarted control plane
    assert adopted.status(handle, spec).phase is InstancePhase.READY
    adopted.stop(handle, spec, grace_s=60)
    gone = wait_phase(adopted, handle, spec, InstancePhase.EXITED, timeout_s=60)
    assert gone.exit_code == 0, gone
    own = backend.status(handle, spec)
    assert (own.phase, own.exit_code, own.reason) == (
        InstancePhase.EXITED,
        0,
        "exited with code 0",
    )
    assert not cgroup.pids()
    assert not any(d.exists() for d in cgroup.dirs.values())  # removed once it ended


def test_stop_kills_the_cgroup_after_the_grace_period(
    mnist_saved_model: Path, tmp_path: Path, started: Started
) -> None:
    spec = sandboxed_spec(tmp_path, mnist_saved_model)
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    wait_phase(backend, handle, spec, InstancePhase.READY)
    backend.stop(handle, spec, grace_s=0)
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=60)
    assert gone.exit_code is not None
    assert not instance_cgroup(spec.instance_id).pids()


def test_the_cgroup_memory_limit(mnist_saved_model: Path, tmp_path: Path, started: Started) -> None:
    """A limit below what TensorFlow needs: the kernel kills it inside its cgroup (or the
    RSS check does first); either way the reason says out of memory."""
    spec = sandboxed_spec(tmp_path, mnist_saved_model, memory_mb=120)
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=120)
    assert gone.reason.startswith("out of memory"), gone
    assert not instance_cgroup(spec.instance_id).pids()


def _standby_ready(folder: Path, timeout_s: float = 150.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not list(folder.glob("standby-*/ready")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(folder.glob("standby-*/ready")), "the standby server never became ready"


def test_a_sandboxed_standby_server_becomes_the_next_instance(
    mnist_saved_model: Path, tmp_path: Path, started: Started
) -> None:
    standbys = tmp_path / "home" / "services" / ".standby"
    backend = LocalInstanceBackend(standby_dir=standbys, shared_readable=(str(mnist_saved_model),))
    try:
        first = sandboxed_spec(tmp_path, mnist_saved_model, processor="tensorflow_cpu")
        cold = backend.start(first)  # no standby yet: cold, and one is started
        started.append((cold, first))
        assert "@" not in cold.ref
        wait_phase(backend, cold, first, InstancePhase.READY)
        _standby_ready(standbys)

        second = sandboxed_spec(
            tmp_path,
            mnist_saved_model,
            processor="tensorflow_cpu",
            token="s3cret-tok",
            memory_mb=3000,
        )
        warm = backend.start(second)
        started.append((warm, second))
        pid, _, name = warm.ref.partition("@")
        assert name.startswith("standby-"), warm.ref  # the standby became it
        ready = wait_phase(backend, warm, second, InstancePhase.READY, timeout_s=60)
        assert ready.url is not None
        assert predict(ready.url).status_code == 401  # its token came with the claim
        assert predict(ready.url, "s3cret-tok").status_code == 200
        folder = Path(second.dir)
        assert "Serving mnist version 1" in (folder / "instance.log").read_text()
        assert (folder / "standby.log").exists()  # the standby's own folder took its name

        cgroup = instance_cgroup(second.instance_id, name)
        assert int(pid) in cgroup.pids()
        limit = cgroup.dirs.get("memory", cgroup.dirs.get("")) or Path("/nonexistent")
        limits = [limit / "memory.limit_in_bytes", limit / "memory.max"]
        assert any(f.exists() and f.read_text().strip() == str(3000 * 2**20) for f in limits)
        user = workload_user("sbxinst")
        assert user is not None
        servers = [psutil.Process(p) for p in cgroup.pids()]
        python = [p for p in servers if p.name().startswith("python")]
        assert python
        assert all(p.uids().real == user[0] for p in python)
        server = [p for p in python if "liqi.serving.standby" in p.cmdline()]
        assert [os.readlink(f"/proc/{p.pid}/cwd") for p in server] == ["/instance"]
        # The token is in no command line and in no file of its folder.
        for proc in psutil.process_iter(["cmdline"]):
            assert "s3cret-tok" not in " ".join(proc.info["cmdline"] or [])
        for path in folder.rglob("*"):
            if path.is_file():
                assert b"s3cret-tok" not in path.read_bytes(), path

        adopted = LocalInstanceBackend()  # a restarted control plane knows it by its handle
        assert adopted.status(warm, second).phase is InstancePhase.READY
        adopted.stop(warm, second, grace_s=60)
        gone = wait_phase(adopted, warm, second, InstancePhase.EXITED, timeout_s=60)
        assert gone.exit_code == 0, gone
        assert not any(d.exists() for d in cgroup.dirs.values())
        own = wait_phase(backend, warm, second, InstancePhase.EXITED)  # the starter reaps it
        assert own.exit_code == 0
        backend.stop(cold, first, grace_s=60)
        wait_phase(backend, cold, first, InstancePhase.EXITED, timeout_s=60)
    finally:
        backend.close()
    assert not list(standbys.glob("standby-*")), "the waiting standby's folder is left"
    for proc in psutil.process_iter(["cmdline"]):
        assert str(standbys) not in " ".join(proc.info["cmdline"] or [])
