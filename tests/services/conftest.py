"""Services against a real control plane whose reconciler starts real `liqi serve`
instances: one control plane per module, a bucket holding the seed's exported MNIST model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from liqi.client import Client
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from tests.support.servers import LiveServer, kill_instances, live_server

PROJECT = "svc_tests"
BUCKET = "svc-models"


def api(client: Client, method: str, path: str, **kwargs: Any) -> Any:
    return client._request(method, f"/api/v1{path}", **kwargs)


def describe(client: Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = api(client, "GET", f"/services/{name}")
    return found


def wait_for(
    client: Client,
    name: str,
    ok: Callable[[dict[str, Any]], bool],
    timeout_s: float = 120.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = describe(client, name)
        if ok(last):
            return last
        time.sleep(0.1)
    raise TimeoutError(f"service {name}: condition not met in {timeout_s}s; last: {last}")


def running(info: dict[str, Any]) -> bool:
    return bool(info["state"] == "RUNNING" and info["instances_ready"] == info["instances_wanted"])


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


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """A control plane with project svc_tests and oss://svc-models/models/1/ = the MNIST model."""
    home = tmp_path_factory.mktemp("svc") / "home"
    try:
        with live_server(home, None) as live:
            with live.admin() as admin:
                seed_model(admin, mnist_saved_model)
            yield live
            with live.admin() as admin:  # stop what the tests left running
                for info in api(admin, "GET", "/services"):
                    api(admin, "DELETE", f"/services/{info['name']}")
                deadline = time.monotonic() + 60
                while api(admin, "GET", "/services") and time.monotonic() < deadline:
                    time.sleep(0.1)
    finally:
        kill_instances(home)


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
