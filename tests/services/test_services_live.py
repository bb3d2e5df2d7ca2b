"""Services end to end: the seed's eas_mnist.json deployed through the API, predictions
through the gateway, tokens, rolling updates and scaling under load, failures with reasons."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import httpx
import numpy as np
import pytest

from liqi import PredictClient
from liqi.client import Client
from liqi.client.services import ServiceInfo
from liqi.errors import AlreadyExistsError, AuthenticationError, NotFoundError
from tests.services.conftest import PROJECT, seed_spec, wait_failed, wait_running, wait_until
from tests.support.servers import LiveServer, instance_folder

pytestmark = pytest.mark.timeout(300)


def create(admin: Client, spec: dict[str, Any]) -> ServiceInfo:
    return admin.create_service(spec, project=PROJECT)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def test_the_seed_spec_deploys_and_answers_through_the_gateway(
    plane: LiveServer, admin: Client, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    created = create(admin, seed_spec("mnist_seed"))
    assert created.state == "CREATING"
    assert created.token is None
    assert created.endpoint == f"{plane.url}/api/predict/mnist_seed"
    assert any("osscredentials" not in w for w in created.warnings) or not created.warnings
    info = wait_running(admin, "mnist_seed")
    assert info.token_required is False
    assert len(info.direct_endpoints) == 1
    images, labels = mnist_digits
    with PredictClient(plane.url, "mnist_seed") as client:
        scores = client.predict({"images": images})["scores"]
    assert accuracy(scores, labels) >= 0.85
    # The same through the direct endpoint, and the TF Serving / V2 sub-paths via the gateway.
    direct = info.direct_endpoints[0].rsplit("/api/predict/", 1)[0]
    with PredictClient(direct, "mnist_seed") as client:
        again = client.predict({"images": images[:5]})["scores"]
    np.testing.assert_allclose(again, scores[:5], rtol=1e-5)
    body = {"instances": images[:2].tolist()}
    tf = httpx.post(
        f"{plane.url}/api/predict/mnist_seed/v1/models/mnist_seed:predict", json=body, timeout=30
    )
    assert tf.status_code == 200, tf.text
    np.testing.assert_allclose(tf.json()["predictions"], scores[:2], rtol=1e-4)
    v2 = httpx.get(f"{plane.url}/api/predict/mnist_seed/v2/models/mnist_seed", timeout=30)
    assert v2.status_code == 200
    assert v2.json()["name"] == "mnist_seed"
    events = [e.message for e in admin.get_service("mnist_seed").events]
    assert any("ready at" in m for m in events)


def test_a_token_service_checks_the_token_at_the_gateway(
    plane: LiveServer, admin: Client, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    created = create(admin, seed_spec("mnist_token", generate_token=True))
    token = created.token
    assert token
    assert admin.service_token("mnist_token").token == token
    wait_running(admin, "mnist_token")
    url = f"{plane.url}/api/predict/mnist_token"
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "wrong"}, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": token}, timeout=30).status_code == 200
    images, labels = mnist_digits
    with PredictClient(plane.url, "mnist_token", token=token) as client:  # the EAS signature
        assert accuracy(client.predict({"images": images})["scores"], labels) >= 0.85
    with (
        PredictClient(plane.url, "mnist_token", token="nope") as client,
        pytest.raises(AuthenticationError),
    ):
        client.predict({"images": images[:1]})


def test_bad_specs_are_refused_and_nothing_is_created(admin: Client) -> None:
    before = {s.name for s in admin.list_services()}
    with pytest.raises(NotFoundError, match="Model not found"):
        create(admin, seed_spec("mnist_missing", model_path="oss://svc-models/nothing/"))
    with pytest.raises(NotFoundError, match="does not exist"):
        create(admin, seed_spec("mnist_nobucket", model_path="oss://no-such-bucket/models/"))
    with pytest.raises(Exception, match=r"metadata\.instance"):
        create(admin, seed_spec("mnist_badtype", metadata={"instance": "many"}))
    assert {s.name for s in admin.list_services()} == before
    with pytest.raises(NotFoundError):
        admin.get_service("no_such_service")
    gone = httpx.post(f"{admin.endpoint}/api/predict/no_such_service", content=b"x", timeout=30)
    assert gone.status_code == 404
    assert "no_such_service" in gone.text


def test_a_duplicate_name_is_a_conflict(admin: Client) -> None:
    create(admin, seed_spec("mnist_dup", metadata={"instance": 0}))
    with pytest.raises(AlreadyExistsError, match="already exists"):
        create(admin, seed_spec("mnist_dup"))
    wait_running(admin, "mnist_dup")
    admin.delete_service("mnist_dup")


def test_a_processor_that_cannot_load_the_model_fails_with_the_reason(
    plane: LiveServer, admin: Client
) -> None:
    create(admin, seed_spec("mnist_wrongproc", processor="onnx"))
    info = wait_failed(admin, "mnist_wrongproc")
    assert "failed to start" in info.reason
    assert "onnx" in info.reason.lower()
    crashed = [i for i in info.instances if i.state == "CRASHED"]
    assert crashed
    assert crashed[0].reason
    answer = httpx.post(f"{plane.url}/api/predict/mnist_wrongproc", content=b"x", timeout=30)
    assert answer.status_code == 503
    assert "FAILED" in answer.text
    admin.delete_service("mnist_wrongproc")


class Hammer:
    """Requests through the gateway on two threads until stopped; counts the failures."""

    def __init__(self, url: str, body: dict[str, Any]) -> None:
        self.url, self.body = url, body
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def __enter__(self) -> Hammer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            for _ in range(100_000):
                if self._stop.is_set():
                    return
                try:
                    answer = client.post(self.url, json=self.body)
                    if answer.status_code == 200:
                        self.ok += 1
                    else:
                        self.failures.append(f"{answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))


def test_modify_and_scale_under_load_fail_no_request(
    plane: LiveServer, admin: Client, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    create(admin, seed_spec("mnist_roll"))
    wait_running(admin, "mnist_roll")
    body = {"instances": mnist_digits[0][:1].tolist()}
    url = f"{plane.url}/api/predict/mnist_roll/v1/models/mnist_roll:predict"
    with Hammer(url, body) as hammer:
        changed = admin.modify_service(
            "mnist_roll", {"metadata": {"rpc": {"batching": True, "max_batch_size": 16}}}
        )
        assert changed.current_version == 2
        first = {i.id for i in admin.get_service("mnist_roll").instances}
        info = wait_running(admin, "mnist_roll")
        assert info.instances
        assert all(i.version == 2 for i in info.instances)
        assert {i.id for i in info.instances}.isdisjoint(first) or len(first) > 1
        assert admin.scale_service("mnist_roll", 2).instances_wanted == 2
        assert wait_running(admin, "mnist_roll").instances_ready == 2
        assert admin.scale_service("mnist_roll", 1).instances_wanted == 1
        assert len(wait_running(admin, "mnist_roll").instances) == 1
        rolled = admin.switch_service_version("mnist_roll", 1)
        assert rolled.current_version == 1
        info = wait_running(admin, "mnist_roll")
        assert info.instances
        assert all(i.version == 1 for i in info.instances)
    assert hammer.failures == []
    assert hammer.ok > 50
    versions = admin.list_service_versions("mnist_roll")
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].config["metadata"]["rpc"]["max_batch_size"] == 16
    admin.delete_service("mnist_roll")


def test_a_killed_instance_is_restarted_and_the_crash_is_kept(
    plane: LiveServer, admin: Client
) -> None:
    create(admin, seed_spec("mnist_kill"))
    info = wait_running(admin, "mnist_kill")
    pid = _pid_of(plane, info.instances[0].id)
    os.kill(pid, signal.SIGKILL)
    info = wait_until(
        admin,
        "mnist_kill",
        lambda s: s.state == "RUNNING" and s.is_settled and s.instances[0].restarts >= 1,
    )
    events = " ".join(e.message for e in info.events)
    assert ("crashed" in events and "signal 9" in events.lower()) or "SIGKILL" in events
    answer = httpx.get(f"{plane.url}/api/predict/mnist_kill", timeout=30)
    assert answer.status_code == 200
    admin.delete_service("mnist_kill")


def test_stop_start_and_delete(plane: LiveServer, admin: Client) -> None:
    create(admin, seed_spec("mnist_life"))
    wait_running(admin, "mnist_life")
    assert admin.stop_service("mnist_life").state == "STOPPING"
    stopped_info = admin.wait_service("mnist_life", timeout_s=120)
    assert stopped_info.state == "STOPPED"
    assert not stopped_info.instances
    stopped = httpx.get(f"{plane.url}/api/predict/mnist_life", timeout=30)
    assert stopped.status_code == 503
    assert "STOPPED" in stopped.text
    admin.start_service("mnist_life")
    wait_running(admin, "mnist_life")
    admin.delete_service("mnist_life")
    admin.wait_service_deleted("mnist_life", timeout_s=60)
    assert "mnist_life" not in {s.name for s in admin.list_services()}
    assert httpx.get(f"{plane.url}/api/predict/mnist_life", timeout=30).status_code == 404


def test_memory_over_the_limit_fails_the_service(admin: Client) -> None:
    create(admin, seed_spec("mnist_oom", metadata={"instance": 1, "memory": 64}))
    info = wait_failed(admin, "mnist_oom")
    assert "out of memory" in info.reason
    admin.delete_service("mnist_oom")


def test_scale_to_zero_holds_the_first_request(
    plane: LiveServer, admin: Client, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    spec = seed_spec(
        "mnist_zero",
        autoscaler={
            "min": 0,
            "max": 2,
            "strategies": {"qps": 100},
            "behavior": {"onZero": {"scaleDownGracePeriodSeconds": 1}},
        },
    )
    spec["metadata"]["instance"] = 0
    create(admin, spec)
    assert not wait_running(admin, "mnist_zero").instances
    body = {"instances": mnist_digits[0][:1].tolist()}
    url = f"{plane.url}/api/predict/mnist_zero/v1/models/mnist_zero:predict"
    answer = httpx.post(url, json=body, timeout=90)  # held while an instance starts
    assert answer.status_code == 200, answer.text
    assert admin.get_service("mnist_zero").instances_wanted == 1
    # Idle again: back to zero after the grace period.
    wait_until(admin, "mnist_zero", lambda s: s.instances_wanted == 0 and not s.instances)
    admin.delete_service("mnist_zero")


def _pid_of(plane: LiveServer, instance_id: str) -> int:
    """The instance's process: it works in its own folder (a standby server that became the
    instance has no instance id in its command line)."""
    import psutil

    for process in psutil.process_iter(["pid", "name"]):
        folder = instance_folder(process.info["pid"]) or ""
        if folder.endswith(f"/{instance_id}") and process.info["name"] != "bwrap":
            return int(process.info["pid"])
    raise AssertionError(f"no process for instance {instance_id}")
