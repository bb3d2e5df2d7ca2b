"""The local instance backend with real `liqi serve` processes of the real MNIST SavedModel:
start, readiness, predictions, stop, adoption after a control-plane restart, and every way
an instance ends (load failures, SIGKILL, the memory limit, the stop grace period)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from liqi.backends.instances import InstanceHandle, InstancePhase, InstanceSpec, InstanceStatus
from liqi.backends.local_instances import (
    STOP_FILE,
    LocalInstanceBackend,
    _read_deadline,
    is_instance,
    serve_command,
)

pytestmark = pytest.mark.timeout(180)

ROW = {"instances": [[0.0] * 784]}


Started = list[tuple[InstanceHandle, InstanceSpec]]


@pytest.fixture
def started() -> Iterator[Started]:
    """The instances a test started: SIGKILLed at teardown (if still theirs), so no failure
    leaves one behind."""
    instances: Started = []
    yield instances
    for handle, spec in instances:
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            if is_instance(int(handle.ref), spec.instance_id):
                os.killpg(int(handle.ref), signal.SIGKILL)


def make_spec(tmp_path: Path, model_uri: str | Path, **fields: object) -> InstanceSpec:
    instance_id = f"mnist-{uuid.uuid4().hex[:8]}"
    return InstanceSpec(
        instance_id=instance_id,
        service="mnist",
        model_uri=str(model_uri),
        dir=str(tmp_path / instance_id),
        env={"LIQI_HOME": str(tmp_path / "home")},
        **fields,  # type: ignore[arg-type]
    )


def wait_phase(
    backend: LocalInstanceBackend,
    handle: InstanceHandle,
    spec: InstanceSpec,
    phase: InstancePhase,
    timeout_s: float = 150.0,
) -> InstanceStatus:
    deadline = time.monotonic() + timeout_s
    status = backend.status(handle, spec)
    while status.phase is not phase and time.monotonic() < deadline:
        if status.phase is InstancePhase.EXITED:
            break  # final: no use waiting
        time.sleep(0.05)
        status = backend.status(handle, spec)
    assert status.phase is phase, (status, _log(spec))
    return status


def _log(spec: InstanceSpec) -> str:
    path = Path(spec.dir) / "instance.log"
    return path.read_text()[-3000:] if path.exists() else "(no log)"


def predict(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": token} if token else {}
    return httpx.post(
        f"{url}/v1/models/mnist:predict", json=ROW, headers=headers, timeout=30, trust_env=False
    )


def test_the_command_line_carries_the_spec(tmp_path: Path) -> None:
    spec = make_spec(
        tmp_path,
        "oss://models/mnist/",
        processor="tensorflow_cpu_1.x",
        max_batch_wait_ms=2.5,
        warmup_file="/data/warmup.bin",
        token="not-in-argv",
    )
    argv = serve_command(spec)
    assert argv[:4] == [sys.executable, "-m", "liqi", "serve"]
    assert argv[-2:] == ["--", "oss://models/mnist/"]
    flags = dict(zip(argv[5:-2:2], argv[6:-2:2], strict=True))
    assert argv[4] == "--exit-on-load-failure"
    assert flags["--instance-id"] == spec.instance_id
    assert flags["--state-file"] == str(Path(spec.dir) / "state.json")
    assert flags["--processor"] == "tensorflow_cpu_1.x"
    assert flags["--max-batch-wait-ms"] == "2.5"
    assert flags["--warmup-file"] == "/data/warmup.bin"
    assert "--processor-entry" not in flags
    assert "not-in-argv" not in argv


@pytest.mark.tf
def test_start_ready_adopt_and_stop(
    mnist_saved_model: Path, tmp_path: Path, started: Started
) -> None:
    spec = make_spec(tmp_path, mnist_saved_model, token="s3cret", memory_mb=8000)
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    assert handle.backend == "local"
    assert backend.status(handle, spec).phase is InstancePhase.STARTING
    assert InstanceSpec.from_json((Path(spec.dir) / "spec.json").read_text()) == spec.redacted()
    assert "s3cret" not in (Path(spec.dir) / "spec.json").read_text()  # no secret at rest
    ready = wait_phase(backend, handle, spec, InstancePhase.READY)
    assert ready.url is not None
    assert ready.rss_mb is not None
    assert 50 < ready.rss_mb < 8000
    assert predict(ready.url).status_code == 401  # the token reached the instance
    answer = predict(ready.url, "s3cret")
    assert answer.status_code == 200
    assert len(answer.json()["predictions"][0]) == 10

    # A restarted control plane: a new backend object knows the instance by its handle.
    adopted = LocalInstanceBackend()
    assert adopted.status(handle, spec).phase is InstancePhase.READY
    assert adopted.status(handle, spec).url == ready.url
    adopted.stop(handle, spec, grace_s=60)
    adopted.stop(handle, spec, grace_s=60)  # idempotent
    gone = wait_phase(adopted, handle, spec, InstancePhase.EXITED, timeout_s=60)
    assert gone.exit_code == 0  # from the state file: it is not this object's child
    assert gone.reason == "exited with code 0"
    assert gone.url is None
    own = backend.status(handle, spec)  # the starter reaps its child
    assert (own.phase, own.exit_code, own.reason) == (
        InstancePhase.EXITED,
        0,
        "exited with code 0",
    )
    backend.stop(handle, spec)  # a process already gone is fine
    assert backend.status(handle, spec).phase is InstancePhase.EXITED


STARTER = """
import sys
from liqi.backends.instances import InstanceSpec
from liqi.backends.local_instances import LocalInstanceBackend

spec = InstanceSpec.from_json(sys.stdin.read())
print(LocalInstanceBackend().start(spec).ref)
"""


@pytest.mark.tf
def test_an_instance_outlives_its_control_plane(
    mnist_saved_model: Path, tmp_path: Path, started: Started
) -> None:
    spec = make_spec(tmp_path, mnist_saved_model)
    starter = subprocess.run(
        [sys.executable, "-c", STARTER],
        input=spec.to_json(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    handle = InstanceHandle("local", starter.stdout.strip())
    started.append((handle, spec))
    backend = LocalInstanceBackend()
    ready = wait_phase(backend, handle, spec, InstancePhase.READY)
    assert ready.url is not None
    assert predict(ready.url).status_code == 200
    assert psutil.Process(int(handle.ref)).ppid() != os.getpid()
    backend.stop(handle, spec, grace_s=60)
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=60)
    assert (gone.exit_code, gone.reason) == (0, "exited with code 0")


def test_a_missing_model_path(tmp_path: Path, started: Started) -> None:
    spec = make_spec(tmp_path, tmp_path / "no-such-model")
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=60)
    assert gone.exit_code == 3
    assert f"Model path '{tmp_path / 'no-such-model'}' does not exist" in gone.reason
    state = json.loads((Path(spec.dir) / "state.json").read_text())
    assert state["state"] == "failed"
    assert f"Error: {gone.reason}" in _log(spec)
    # A restarted control plane reads the same verdict from the state file.
    assert LocalInstanceBackend().status(handle, spec) == gone


@pytest.mark.tf
def test_a_broken_model(tmp_path: Path, started: Started) -> None:
    model = tmp_path / "broken" / "1"
    model.mkdir(parents=True)
    (model / "saved_model.pb").write_bytes(b"not a protobuf")
    spec = make_spec(tmp_path, model.parent)
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED)
    assert gone.exit_code == 3
    assert gone.reason.startswith("Model 'mnist' has no version ready: version 1 failed to load")
    assert "Cannot load" in gone.reason


@pytest.mark.tf
def test_killed_from_outside(mnist_saved_model: Path, tmp_path: Path, started: Started) -> None:
    spec = make_spec(tmp_path, mnist_saved_model)
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    os.kill(int(handle.ref), signal.SIGKILL)
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=30)
    assert (gone.exit_code, gone.reason) == (-9, "killed by signal 9 (SIGKILL)")


@pytest.mark.tf
def test_over_the_memory_limit(mnist_saved_model: Path, tmp_path: Path, started: Started) -> None:
    spec = make_spec(tmp_path, mnist_saved_model, memory_mb=50)
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=120)
    assert gone.exit_code == -9
    assert gone.reason.startswith("out of memory: RSS ")
    assert gone.reason.endswith("MB exceeded the limit of 50 MB (metadata.memory)")
    assert int(gone.reason.split()[4]) > 50
    assert not psutil.pid_exists(int(handle.ref))
    # The reason stays, for this backend and for one after a restart.
    assert backend.status(handle, spec) == gone
    assert LocalInstanceBackend().status(handle, spec) == gone


SLOW_PROCESSOR = """
    import time
    from pathlib import Path

    class Slow:
        def initialize(self):
            pass

        def process(self, data):
            Path("busy").write_text("a request is in flight")
            time.sleep(120)
            return data, 200
"""


def test_stop_kills_after_the_grace_period(tmp_path: Path, started: Started) -> None:
    """SIGTERM waits for the requests in flight; one that takes too long gets SIGKILL."""
    code = tmp_path / "slow"
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(SLOW_PROCESSOR))
    spec = make_spec(tmp_path, code, processor="python", processor_entry="app.py")
    backend = LocalInstanceBackend()
    handle = backend.start(spec)
    started.append((handle, spec))
    ready = wait_phase(backend, handle, spec, InstancePhase.READY, timeout_s=60)
    url = f"{ready.url}/api/predict/mnist"

    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the instance dies under it
            httpx.post(url, content=b"x", timeout=150, trust_env=False)

    threading.Thread(target=call, daemon=True).start()
    busy = Path(spec.dir) / "busy"  # the instance's working directory is its folder
    deadline = time.monotonic() + 30
    while not busy.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy.exists(), _log(spec)
    backend.stop(handle, spec, grace_s=1.0)
    # The deadline a restarted control plane enforces is on the machine's monotonic clock.
    assert (Path(spec.dir) / STOP_FILE).read_text().startswith("monotonic ")
    gone = wait_phase(backend, handle, spec, InstancePhase.EXITED, timeout_s=30)
    assert (gone.exit_code, gone.reason) == (-9, "killed by signal 9 (SIGKILL)")


def test_a_stop_deadline_is_read_on_the_monotonic_clock_whoever_wrote_it(tmp_path: Path) -> None:
    """A step of the wall clock does not move a stop deadline; one an older liqi wrote in
    epoch seconds is read as the same moment on the monotonic clock."""
    stop_file = tmp_path / STOP_FILE
    stop_file.write_text("monotonic 123.5")
    assert _read_deadline(stop_file) == 123.5
    stop_file.write_text(repr(time.time() + 30))  # an older liqi's: 30 s from now
    read = _read_deadline(stop_file)
    assert read is not None
    assert abs(read - (time.monotonic() + 30)) < 5
    stop_file.write_text("garbage")
    assert _read_deadline(stop_file) is None
    assert _read_deadline(tmp_path / "missing") is None


def test_a_standby_server_becomes_the_next_tensorflow_instance(
    mnist_saved_model: Path, tmp_path: Path, started: Started
) -> None:
    backend = LocalInstanceBackend(standby_dir=tmp_path / "standby")
    try:
        first = make_spec(tmp_path, mnist_saved_model, processor="tensorflow_cpu")
        cold = backend.start(first)  # no standby yet: a cold start, and one is spawned
        started.append((cold, first))
        wait_phase(backend, cold, first, InstancePhase.READY)
        ready_files = list((tmp_path / "standby").glob("standby-*/ready"))
        deadline = time.monotonic() + 120
        while not ready_files and time.monotonic() < deadline:
            time.sleep(0.05)
            ready_files = list((tmp_path / "standby").glob("standby-*/ready"))
        assert ready_files, "the standby server never became ready"
        standby_pid = int(ready_files[0].read_text())

        second = make_spec(tmp_path, mnist_saved_model, processor="tensorflow_cpu", token="t")
        warm = backend.start(second)
        started.append((warm, second))
        assert int(warm.ref) == standby_pid  # the standby took it
        ready = wait_phase(backend, warm, second, InstancePhase.READY, timeout_s=60)
        assert ready.url is not None
        assert predict(ready.url).status_code == 401  # the token came with the claim
        assert predict(ready.url, "t").status_code == 200
        assert "Serving mnist version 1" in _log(second)  # its output went to its log
        assert psutil.Process(standby_pid).cwd() == second.dir

        # A restarted control plane knows it too, and stops it.
        adopted = LocalInstanceBackend()
        assert adopted.status(warm, second).phase is InstancePhase.READY
        adopted.stop(warm, second, grace_s=30)
        gone = wait_phase(adopted, warm, second, InstancePhase.EXITED, timeout_s=60)
        assert gone.exit_code == 0
        own = wait_phase(backend, warm, second, InstancePhase.EXITED)  # the starter reaps it
        assert own.exit_code == 0
        backend.stop(cold, first, grace_s=30)
        wait_phase(backend, cold, first, InstancePhase.EXITED, timeout_s=60)
    finally:
        backend.close()
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path / "standby") in " ".join(p.info["cmdline"] or [])
        and p.status() != psutil.STATUS_ZOMBIE
    ]
