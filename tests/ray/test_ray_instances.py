"""RayInstanceBackend against the session's Ray head, without a control plane: an instance
stopped while its launch job still runs is stopped all the same (its actor never serves)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from liqi.backends.instances import InstancePhase, InstanceSpec
from liqi.backends.ray_instance_actor import NAMESPACE
from liqi.backends.ray_instances import RayInstanceBackend
from tests.support.ray_head import RayHead

pytestmark = pytest.mark.timeout(240)

ECHO = (
    "import allspark\n\n\nclass Echo(allspark.BaseProcessor):\n"
    "    def process(self, data):\n        return data, 200\n"
)


def test_an_instance_stopped_before_its_actor_exists_never_serves(
    ray_head: RayHead, tmp_path: Path
) -> None:
    code = tmp_path / "echo"
    code.mkdir()
    (code / "app.py").write_text(ECHO)
    instance_id = f"echo-{uuid.uuid4().hex[:6]}"
    spec = InstanceSpec(
        instance_id=instance_id,
        service="echo",
        model_uri=str(code),
        dir=str(tmp_path / instance_id),
        processor="python",
        processor_path=str(code),
        processor_entry="app.py",
        env={"LIQI_HOME": str(tmp_path / "home")},
        group="ray",
        cpu=1,
    )
    backend = RayInstanceBackend(ray_head.dashboard_url)
    try:
        handle = backend.start(spec)
        backend.stop(handle, spec, grace_s=5)  # at once: the launch job has not run yet
        deadline = time.monotonic() + 180
        status = backend.status(handle, spec)
        while status.phase is not InstancePhase.EXITED and time.monotonic() < deadline:
            time.sleep(0.5)
            status = backend.status(handle, spec)
        assert status.phase is InstancePhase.EXITED, status
        params = [
            ("filter_keys", "ray_namespace"),
            ("filter_predicates", "="),
            ("filter_values", NAMESPACE),
            ("filter_keys", "name"),
            ("filter_predicates", "="),
            ("filter_values", handle.ref),
        ]
        actors = httpx.get(
            f"{ray_head.dashboard_url}/api/v0/actors", params=params, timeout=30
        ).json()["data"]["result"]["result"]
        assert [a["state"] for a in actors] in ([], ["DEAD"])
    finally:
        backend.close()
