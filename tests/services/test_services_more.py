"""Services across a control-plane restart, from an http(s) tarball, with a warm-up file in
a bucket, an instance killed while it loads, and the API on both databases."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from liqi import PredictClient
from liqi.client.eas_requests import TFRequest
from tests.services.conftest import BUCKET, PROJECT, seed_model, seed_spec, wait_running
from tests.support.servers import LiveServer, instance_folder, kill_instances, live_server

pytestmark = pytest.mark.timeout(300)


def _pids(instance_id: str) -> list[int]:
    """Processes working in the instance's folder (a standby server that became the instance
    has no instance id in its command line), but bwrap's own init in a sandboxed one's."""
    return [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "status", "name"])
        if (instance_folder(p.info["pid"]) or "").endswith(f"/{instance_id}")
        and p.info["status"] != psutil.STATUS_ZOMBIE
        and p.info["name"] != "bwrap"
    ]


def test_instances_outlive_a_control_plane_restart_and_are_adopted(
    tmp_path: Path, mnist_saved_model: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    home = tmp_path / "home"
    try:
        _adopt(home, mnist_saved_model, mnist_digits)
    finally:
        kill_instances(home)


def _adopt(
    home: Path, mnist_saved_model: Path, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> None:
    with live_server(home, None) as first, first.admin() as admin:
        seed_model(admin, mnist_saved_model)
        admin.create_service(seed_spec("adopted"), project=PROJECT)
        before = wait_running(admin, "adopted")
    instance = before.instances[0].id
    pids = _pids(instance)
    assert len(pids) == 1  # still running with no control plane
    with live_server(home, None) as second, second.admin() as admin:
        after = wait_running(admin, "adopted")
        assert [i.id for i in after.instances] == [instance]
        assert _pids(instance) == pids
        with PredictClient(second.url, "adopted") as client:
            scores = client.predict({"images": mnist_digits[0]})["scores"]
        assert np.mean(np.argmax(scores, axis=1) == mnist_digits[1]) >= 0.85
        admin.delete_service("adopted")
        admin.wait_service_deleted("adopted", timeout_s=60)
        assert admin.list_services() == []
    assert _pids(instance) == []


@pytest.fixture
def tarball_url(tmp_path: Path, mnist_saved_model: Path) -> Iterator[str]:
    """The model as EAS's docs ship it: a .tar.gz of the SavedModel folder, over HTTP."""
    archive = tmp_path / "site" / "mnist_saved_model.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(mnist_saved_model, arcname="saved_model")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_model_from_an_http_tarball_with_a_warm_up_file_in_a_bucket(
    plane: LiveServer,
    tarball_url: str,
    mnist_digits: tuple[np.ndarray, np.ndarray],
) -> None:
    request = TFRequest("predict_images")
    image = mnist_digits[0][:1]
    request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, image.ravel().tolist())
    with plane.admin() as admin:
        admin.put_object(BUCKET, "warmup/warm_up.bin", request.to_string())
        spec = {
            "name": "mnist_tarball",
            "generate_token": "false",
            "model_path": tarball_url,
            "processor": "tensorflow_cpu_1.12",
            "warm_up_data_path": f"oss://{BUCKET}/warmup/warm_up.bin",
            "metadata": {"instance": 1, "cpu": 1},
        }
        admin.create_service(spec, project=PROJECT)
        info = wait_running(admin, "mnist_tarball")
        logs = admin.service_logs("mnist_tarball")
        assert "warm" in logs.data.lower()
        answer = httpx.post(info.endpoint, content=request.to_string(), timeout=30)
        assert answer.status_code == 200
        admin.delete_service("mnist_tarball")
        with pytest.raises(Exception, match="does not exist"):
            admin.create_service(
                {**spec, "name": "mnist_nowarm", "warm_up_data_path": f"oss://{BUCKET}/x.bin"},
                project=PROJECT,
            )


def test_an_instance_killed_while_it_loads_is_restarted(plane: LiveServer) -> None:
    with plane.admin() as admin:
        admin.create_service(seed_spec("mnist_early"), project=PROJECT)
        deadline = time.monotonic() + 60
        killed = None
        while killed is None and time.monotonic() < deadline:
            info = admin.get_service("mnist_early")
            starting = [i for i in info.instances if i.state == "STARTING"]
            pids = _pids(starting[0].id) if starting else []
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                killed = starting[0].id
            time.sleep(0.05)
        assert killed is not None
        info = wait_running(admin, "mnist_early")
        assert info.instances[0].restarts >= 1
        events = " ".join(e.message for e in info.events)
        assert f"instance {killed} crashed" in events
        admin.delete_service("mnist_early")


def test_the_services_api_on_both_databases(server: LiveServer) -> None:
    """Desired state only (no instances): create, modify, versions, rollback, scale, delete."""
    with server.admin() as admin:
        admin.create_project(PROJECT)
        spec = seed_spec("db_svc", model_path=str(Path(__file__).parent))
        spec["metadata"]["instance"] = 0
        created = admin.create_service(spec, project=PROJECT)
        assert created.instances_wanted == 0
        wait_running(admin, "db_svc")
        changed = admin.modify_service("db_svc", {"metadata": {"cpu": 2}})
        assert changed.current_version == 2
        assert changed.config["metadata"]["cpu"] == 2
        assert changed.config["metadata"]["memory"] == 2000  # merged, not replaced
        replaced = admin.modify_service(
            "db_svc", {**spec, "metadata": {"instance": 0}}, replace=True
        )
        assert "memory" not in replaced.config["metadata"]
        assert [v.version for v in admin.list_service_versions("db_svc")] == [1, 2, 3]
        rolled = admin.switch_service_version("db_svc", 1)
        assert rolled.current_version == 1
        assert rolled.latest_version == 3
        admin.delete_service("db_svc")
        admin.wait_service_deleted("db_svc", timeout_s=30)
        assert admin.list_services() == []
