"""`liqi quickstart` in a fresh LIQI_HOME, twice, then the seed's deploy command by hand:
`liqi eas -c eas_config.ini create eas_mnist.json` and a TF protobuf request to the endpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from liqi.client.eas_requests import TFRequest, TFResponse
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from tests.support.servers import kill_instances

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
LIQI = str(Path(sys.executable).parent / "liqi")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mnist"
SERVICE = "mnist_saved_model_example"


def liqi(home: Path, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    return subprocess.run(
        [LIQI, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    liqi(path, "eas", "delete", SERVICE, "--yes", "--no-wait")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # instances outlive the server: stop them first
        listed = liqi(path, "eas", "list", "--output", "json")
        if listed.returncode != 0 or not json.loads(listed.stdout or "[]"):
            break
        time.sleep(0.5)
    liqi(path, "server", "stop")
    kill_instances(path)


def run_suggested(home: Path, text: str) -> None:
    """The read-only commands quickstart suggests work as printed (in a shell where liqi's
    python and command come first on PATH and LIQI_HOME is the quickstart's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    env["LIQI_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    ran = []
    for line in text.splitlines():
        command = line.strip()
        if command.startswith(("curl ", "python -c", "liqi eas -c")):
            done = subprocess.run(
                ["bash", "-c", command],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            ran.append(done.stdout)
    assert len(ran) == 3, text
    assert '"signature_name"' in ran[0]  # curl: the signature
    assert "Running" in ran[1] or "RUNNING" in ran[1]  # eas desc
    assert ran[2].startswith("[[")  # the scores of one image


def test_quickstart_runs_the_workflow_and_a_second_run_reuses_it(home: Path) -> None:
    first = liqi(home, "quickstart", "--port", "0")
    out = first.stdout
    assert first.returncode == 0, first.stdout + first.stderr
    assert "[OK] Service is running" in out
    predicted = re.search(r"predicted: ([0-9 ]+)", out)
    labels = re.search(r"label: +([0-9 ]+)", out)
    assert predicted is not None
    assert labels is not None
    right = re.search(r"accuracy: (\d+)/(\d+)", out)
    assert right is not None
    assert int(right[1]) / int(right[2]) >= 0.8
    assert "liqi eas -c" in out  # the commands to try next
    run_suggested(home, out.split("Try next:", 1)[1])

    server = json.loads(liqi(home, "server", "status", "--output", "json").stdout)
    second = liqi(home, "quickstart", "--port", "0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "reusing the model" in second.stdout
    assert "service exists" in second.stdout
    again = json.loads(liqi(home, "server", "status", "--output", "json").stdout)
    assert again["pid"] == server["pid"]  # the same control plane
    jobs = liqi(home, "job", "list", "--output", "json", "--project", "quickstart")
    assert len(json.loads(jobs.stdout)) == 1  # trained once

    # The seed's deploy step by hand, with its own files: only bucket and credentials filled.
    deleted = liqi(home, "eas", "delete", SERVICE, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    config = home / "quickstart" / "eas_config.ini"
    spec = home / "eas_mnist.json"
    text = (EXAMPLES / "eas_mnist.json").read_text().replace("${your_bucket}", "quickstart-models")
    text = text.replace("~/tools/.osscredentials", str(home / "quickstart" / ".osscredentials"))
    spec.write_text(text)
    created = liqi(home, "eas", "-c", str(config), "create", str(spec), "--project", "quickstart")
    assert created.returncode == 0, created.stdout + created.stderr
    assert "Service is running" in created.stdout
    endpoint = re.search(r"(http://\S+/api/predict/" + SERVICE + ")", created.stdout)
    assert endpoint is not None

    test = read_data_sets(str(builtin_dir())).test
    images, labels_ = test.images[:30].astype(np.float32), test.labels[:30]
    request = TFRequest("predict_images")
    request.add_feed("images", list(images.shape), TFRequest.DT_FLOAT, images.ravel().tolist())
    answer = httpx.post(endpoint[1], content=request.to_string(), timeout=30)
    assert answer.status_code == 200, answer.text
    scores = np.asarray(TFResponse.from_bytes(answer.content).get_values("scores"))
    assert np.mean(np.argmax(scores.reshape(30, 10), axis=1) == labels_) >= 0.8
