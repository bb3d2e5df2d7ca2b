"""The seed's whole path on Ray by one setting: `liqi quickstart` (add the script, the seed's
``pai -name tensorflow ... -Dscript -Dvolumes -Dbuckets`` line, ``eas create eas_mnist.json``,
predictions through the gateway) with the server's default resource group set to the session's
Ray head, the seed's files unchanged; then Ray's own listings show liqi's workloads."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liqi.backends.ray_instance_actor import NAMESPACE
from tests.support.ray_head import RayHead
from tests.support.servers import kill_instances

pytestmark = [pytest.mark.e2e, pytest.mark.tf, pytest.mark.timeout(900)]
LIQI = str(Path(sys.executable).parent / "liqi")
SERVICE = "mnist_saved_model_example"


@pytest.fixture
def ray_env(ray_head: RayHead, tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    env |= {
        "LIQI_HOME": str(home),
        "LIQI_RESOURCE_GROUPS": f"ray=ray:{ray_head.dashboard_url}",
        "LIQI_RESOURCE_GROUP": "ray",
    }
    yield env
    liqi(env, "eas", "delete", SERVICE, "--yes")
    liqi(env, "server", "stop")
    kill_instances(home)


def liqi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIQI, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_the_seed_path_runs_unchanged_on_ray_by_one_setting(
    ray_env: dict[str, str], ray_head: RayHead
) -> None:
    done = liqi(ray_env, "quickstart", "--port", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[OK] Service is running" in done.stdout
    right = re.search(r"accuracy: (\d+)/(\d+)", done.stdout)
    assert right is not None, done.stdout
    assert int(right[1]) / int(right[2]) >= 0.8

    # `ray job list`: the training job ran as a Ray job named after liqi's job id.
    jobs = liqi(ray_env, "job", "list", "--output", "json", "--project", "quickstart")
    assert '"resource_group": "ray"' in jobs.stdout.replace('":"', '": "'), jobs.stdout
    from ray.job_submission import JobSubmissionClient

    ray_jobs = JobSubmissionClient(ray_head.dashboard_url).list_jobs()
    trained = [j for j in ray_jobs if (j.metadata or {}).get("liqi_job_id")]
    assert trained, [j.submission_id for j in ray_jobs]
    assert any(str(j.status).endswith("SUCCEEDED") for j in trained)
    # `ray list actors`: the service's instance is a detached actor in liqi's namespace.
    answer = httpx.get(
        f"{ray_head.dashboard_url}/api/v0/actors",
        params=[
            ("detail", "true"),
            ("filter_keys", "ray_namespace"),
            ("filter_predicates", "="),
            ("filter_values", NAMESPACE),
            ("filter_keys", "state"),
            ("filter_predicates", "="),
            ("filter_values", "ALIVE"),
        ],
        timeout=30,
    )
    actors = answer.json()["data"]["result"]["result"]
    assert [a for a in actors if str(a["name"]).startswith(f"liqi-{SERVICE}-")], actors
