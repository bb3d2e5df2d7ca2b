"""Instances in liqi.sandbox (isolation "sandbox"): the real MNIST SavedModel served from
bubblewrap, its cgroup named after the instance; start, ready, predict, adopt by a new
backend object, stop; killed with its cgroup; the cgroup's memory limit as the reason."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

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
    for _, spec in instances:
        with contextlib.suppress(Exception):
            instance_cgroup(spec.instance_id).remove()


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
    assert spec.env["LIQI_HOME"] == str(Path(spec.dir) / "home")
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
