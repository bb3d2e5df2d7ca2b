"""`liqi eas` with real model-server instances: the seed's eas_mnist.json deployed, changed,
rolled back, stopped, started, scaled and deleted from the command line; a processor that
never starts ends as FAILED with its reason.

Every instance start costs seconds (TensorFlow's import), so one test walks one service
through its whole life (three starts) instead of each test making its own.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from liqi.cli.main import cli
from tests.support.servers import LiveServer, live_server

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("eas_cli_live") / "home", None) as live:
        yield live


def run(plane: LiveServer, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(plane.home), *args], catch_exceptions=False)


def desc(plane: LiveServer, name: str) -> dict[str, Any]:
    result = run(plane, "eas", "desc", name, "-o", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_the_seed_spec_through_its_whole_life(
    plane: LiveServer, mnist_saved_model: Path, tmp_path: Path
) -> None:
    spec = tmp_path / "eas_mnist.json"
    spec.write_text(
        json.dumps(
            {
                "name": "mnist_cli",
                "generate_token": "false",
                "model_path": str(mnist_saved_model.parent),  # holds 1/saved_model.pb
                "processor": "tensorflow_cpu",
                "metadata": {"region": "shanghai", "instance": 1, "cpu": 1, "memory": 2000},
            }
        )
    )
    # create: eascmd's table, progress, and the running service (start 1).
    created = run(plane, "eas", "create", str(spec))
    assert created.exit_code == 0, created.output
    out = created.stdout
    endpoint = f"{plane.url}/api/predict/mnist_cli"
    assert re.search(rf"^\|\s+Endpoint \| {re.escape(endpoint)}\s+\|$", out, re.M)
    assert re.search(r"^\|\s+Token \| none \(generate_token is false\)\s+\|$", out, re.M)
    assert "[OK] Creating service\n[OK] Waiting [Total: 1, Pending: 1, Running: 0]\n" in out
    direct = re.search(
        r"^\| Direct Endpoint \| (http://\S+/api/predict/mnist_cli)\s+\|$", out, re.M
    )
    assert direct, out
    assert out.splitlines()[-1] == "[OK] Service is running"

    info = desc(plane, "mnist_cli")
    assert info["state"] == "RUNNING"
    assert (info["instances_wanted"], info["instances_ready"]) == (1, 1)
    assert [i["state"] for i in info["instances"]] == ["READY"]
    assert info["direct_endpoints"] == [direct.group(1)]
    assert "1 ready of 1 wanted" in run(plane, "eas", "desc", "mnist_cli").stdout
    # Both endpoints answer (a GET returns the model's signature).
    for url in (endpoint, direct.group(1)):
        answer = httpx.get(url, timeout=30, trust_env=False)
        assert answer.status_code == 200, answer.text
        assert answer.json()["inputs"][0]["name"] == "images"
    first_instance = info["instances"][0]["id"]
    logs = run(plane, "eas", "logs", "mnist_cli")
    assert logs.exit_code == 0
    assert "Serving mnist_cli version 1" in logs.stdout

    # modify: a new version with no instance; the old instance drains.
    patch = tmp_path / "patch.json"
    patch.write_text('{"metadata": {"instance": 0}}')
    modified = run(plane, "eas", "modify", "mnist_cli", "-s", str(patch))
    assert modified.exit_code == 0, modified.output
    assert modified.stdout.splitlines()[-1] == "[OK] Service is running"
    info = desc(plane, "mnist_cli")
    assert (info["current_version"], info["instances_wanted"], info["instances"]) == (2, 0, [])
    versions = json.loads(run(plane, "eas", "versions", "mnist_cli", "-o", "json").stdout)
    assert [(v["version"], v["current"]) for v in versions] == [(1, False), (2, True)]

    # rollback: version 1 again, one instance (start 2).
    rolled = run(plane, "eas", "rollback", "mnist_cli", "--version", "1")
    assert rolled.exit_code == 0, rolled.output
    assert rolled.stdout.splitlines()[-1] == "[OK] Service is running"
    info = desc(plane, "mnist_cli")
    assert (info["current_version"], info["latest_version"], info["instances_ready"]) == (1, 2, 1)
    second_instance = info["instances"][0]["id"]
    assert second_instance != first_instance

    # stop: the instance ends, so following its log ends too.
    stopped = run(plane, "eas", "stop", "mnist_cli")
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout.splitlines()[-1] == "[OK] Service is stopped"
    assert desc(plane, "mnist_cli")["state"] == "STOPPED"
    followed = run(plane, "eas", "logs", "mnist_cli", "--instance", second_instance, "--follow")
    assert followed.exit_code == 0
    assert "Serving mnist_cli version 1" in followed.stdout
    assert httpx.get(endpoint, timeout=30, trust_env=False).status_code == 503

    # start (start 3), then scale to 0: the wait covers the drain.
    started = run(plane, "service", "start", "mnist_cli")
    assert started.exit_code == 0, started.output
    assert started.stdout.splitlines()[-1] == "[OK] Service is running"
    assert desc(plane, "mnist_cli")["instances_ready"] == 1
    scaled = run(plane, "eas", "scale", "mnist_cli", "0")
    assert scaled.exit_code == 0, scaled.output
    info = desc(plane, "mnist_cli")
    assert (info["state"], info["instances_wanted"], info["instances"]) == ("RUNNING", 0, [])

    events = [
        e["message"]
        for e in json.loads(run(plane, "eas", "events", "mnist_cli", "-o", "json").stdout)
    ]
    assert "switched to version 1 by" in " ".join(events)
    assert "state RUNNING -> STOPPING" in events

    deleted = run(plane, "eas", "delete", "mnist_cli", "--yes")
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout.splitlines()[-1] == "[OK] Service is deleted"
    assert run(plane, "eas", "desc", "mnist_cli").exit_code == 4


def test_a_processor_that_never_starts_fails_with_its_reason(
    plane: LiveServer, tmp_path: Path
) -> None:
    code = tmp_path / "proc"
    code.mkdir()
    (code / "app.py").write_text(
        textwrap.dedent(
            """
            import allspark

            class Broken(allspark.BaseProcessor):
                def initialize(self):
                    raise RuntimeError("this processor never starts")

                def process(self, data):
                    return data, 200
            """
        )
    )
    spec = tmp_path / "broken.json"
    spec.write_text(
        json.dumps(
            {
                "name": "cli_broken",
                "processor_type": "python",
                "processor_path": str(code),
                "processor_entry": "app.py",
                "metadata": {"instance": 1},
            }
        )
    )
    created = run(plane, "eas", "create", str(spec))
    assert created.exit_code == 6, created.output
    last = created.stdout.splitlines()[-1]
    assert last.startswith("[FAILED] version 1 failed to start 3 times:")
    assert "RuntimeError: this processor never starts" in last
    assert "Error: Service 'cli_broken' FAILED: version 1 failed to start" in created.stderr
    assert "Service is running" not in created.stdout
    info = desc(plane, "cli_broken")
    assert info["state"] == "FAILED"
    assert "this processor never starts" in info["reason"]
    logs = run(plane, "eas", "logs", "cli_broken")
    assert "RuntimeError: this processor never starts" in logs.stdout
    assert run(plane, "eas", "delete", "cli_broken", "--yes").exit_code == 0
