"""Services against a real control plane whose reconciler starts real `liqi serve`
instances: one control plane per module, a bucket holding the seed's exported MNIST model."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liqi.client import Client
from liqi.client.services import ServiceInfo
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import NotFoundError
from tests.support.servers import LiveServer, kill_instances, live_server

PROJECT = "svc_tests"
BUCKET = "svc-models"


def wait_running(client: Client, name: str, timeout_s: float = 120.0) -> ServiceInfo:
    """``wait_service`` until the service has settled, which must be RUNNING: a service
    that FAILED (or STOPPED) fails the test at once, with its reason."""
    info = client.wait_service(name, timeout_s=timeout_s)
    assert info.state == "RUNNING", f"service {name} is {info.state}: {info.reason}"
    return info


def wait_failed(client: Client, name: str, timeout_s: float = 120.0) -> ServiceInfo:
    """``wait_service`` until the service is FAILED (with its reason)."""
    return client.wait_service(name, timeout_s=timeout_s, until={"FAILED"})


def wait_until(
    client: Client,
    name: str,
    ok: Callable[[ServiceInfo], bool],
    timeout_s: float = 120.0,
) -> ServiceInfo:
    """Poll ``get_service`` until ``ok`` holds, for what ``wait_service`` cannot tell apart
    (a settled service that has yet to notice a crash or an idle period)."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = client.get_service(name)
        if ok(info):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(
                f"service {name}: condition not met in {timeout_s:g} s; last: {info}"
            )
        time.sleep(0.1)


def seed_model(client: Client, model_dir: Path) -> None:
    """PROJECT, its BUCKET, and the SavedModel ``model_dir`` at ``models/1/`` in it: what
    ``seed_spec`` deploys."""
    client.create_project(PROJECT)
    client.create_bucket(BUCKET, project=PROJECT)
    upload_model(client, model_dir, BUCKET, "models/1/")


def upload_model(client: Client, model_dir: Path, bucket: str, prefix: str) -> None:
    for path in sorted(model_dir.rglob("*")):
        if path.is_file():
            client.put_object(bucket, f"{prefix}{path.relative_to(model_dir)}", path)


@contextlib.contextmanager
def seeded_plane(home: Path, model_dir: Path, **server: Any) -> Iterator[LiveServer]:
    """A control plane (``live_server`` with ``server``'s options) with project svc_tests and
    oss://svc-models/models/1/ = ``model_dir``; the services left running are deleted and
    their instances killed at the end."""
    try:
        with live_server(home, None, **server) as live:
            with live.admin() as admin:
                seed_model(admin, model_dir)
            yield live
            with live.admin() as admin:  # stop what the tests left running
                names = [info.name for info in admin.list_services()]
                for name in names:
                    with contextlib.suppress(NotFoundError):
                        admin.delete_service(name)
                for name in names:
                    admin.wait_service_deleted(name, timeout_s=90)
    finally:
        kill_instances(home)


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """A control plane with project svc_tests and oss://svc-models/models/1/ = the MNIST model."""
    with seeded_plane(tmp_path_factory.mktemp("svc") / "home", mnist_saved_model) as live:
        yield live


@pytest.fixture(scope="module")
def admin(plane: LiveServer) -> Iterator[Client]:
    with plane.admin() as client:
        yield client


@pytest.fixture(scope="session")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    test = read_data_sets(str(builtin_dir())).test
    return test.images[:50].astype(np.float32), test.labels[:50]


def seed_spec(name: str, **extra: Any) -> dict[str, Any]:
    """The seed's eas_mnist.json, bucket filled in."""
    spec: dict[str, Any] = {
        "name": name,
        "generate_token": "false",
        "model_path": f"oss://{BUCKET}/models/",
        "processor": "tensorflow_cpu",
        "osscredentials": "~/tools/.osscredentials",
        "metadata": {"region": "shanghai", "instance": 1, "cpu": 1, "memory": 2000},
    }
    spec.update(extra)
    return spec
