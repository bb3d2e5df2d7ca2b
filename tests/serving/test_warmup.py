"""Start-up of `liqi serve`: `--warmup-file` requests replayed (5 times each) through the EAS
route before the server counts as ready, a failing one keeping it not ready or ending it (code
3) with --exit-on-load-failure, a bad file refused at start; and what counts as a failed
first load."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from liqi.errors import InvalidRequestError, NotFoundError
from liqi.protocols import eas
from liqi.serving.server import ServeOptions, build_app
from liqi.serving.warmup import REPEATS, WarmupRequests
from tests.support.model_server import live_model_server

pytestmark = pytest.mark.timeout(180)


def mnist_request(rows: int, width: int = 784) -> bytes:
    """What the EAS SDK's TFRequest.to_string() writes for an 'images' input."""
    return eas.encode_predict_request({"images": np.zeros((rows, width), np.float32)})


def mnist_options(model: Path, tmp_path: Path, warmup: Path) -> ServeOptions:
    return ServeOptions(
        uri=str(model),
        name="mnist",
        cache_dir=tmp_path / "cache",
        poll_interval_s=0,
        warmup_file=warmup,
    )


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in:\n{text}"
    return float(match[1])


def serve_process(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """`liqi serve ...` expected to end by itself (a start error, a failed load)."""
    return subprocess.run(
        [sys.executable, "-m", "liqi", "serve", *args],
        env={**os.environ, "LIQI_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def test_reading_warmup_files(tmp_path: Path) -> None:
    lines = tmp_path / "requests.txt"
    lines.write_bytes(b'hello\r\n\n{"instances": [[1]]}\n  \nlast')
    read = WarmupRequests.read(lines)
    assert read.bodies == (b"hello", b'{"instances": [[1]]}', b"last")
    assert read.content_type == ""
    binary = tmp_path / "request.bin"
    binary.write_bytes(mnist_request(1))
    assert WarmupRequests.read(binary).bodies == (mnist_request(1),)
    assert WarmupRequests.read(binary).content_type == "application/octet-stream"
    with pytest.raises(NotFoundError, match=r"Warm-up file .*missing.bin does not exist"):
        WarmupRequests.read(tmp_path / "missing.bin")
    (tmp_path / "request.json").write_text("{}")
    with pytest.raises(InvalidRequestError, match=r"neither \.bin nor \.txt"):
        WarmupRequests.read(tmp_path / "request.json")
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(InvalidRequestError, match="is empty"):
        WarmupRequests.read(tmp_path / "blank.txt")
    (tmp_path / "folder.bin").mkdir()
    with pytest.raises(InvalidRequestError, match="Cannot read warm-up file"):
        WarmupRequests.read(tmp_path / "folder.bin")


@pytest.mark.tf
def test_a_bin_request_is_replayed_before_ready(mnist_saved_model: Path, tmp_path: Path) -> None:
    warmup = tmp_path / "warmup.bin"
    warmup.write_bytes(mnist_request(3))
    options = mnist_options(mnist_saved_model, tmp_path, warmup)
    with live_model_server(build_app(options)) as server, server.client() as http:
        metrics = http.get("/metrics").text  # read as soon as /readyz said 200
        labels = '{model="mnist",version="1"}'
        assert metric(metrics, f"liqi_batch_size_rows_count{labels}") == REPEATS
        assert metric(metrics, f"liqi_batch_size_rows_sum{labels}") == 3 * REPEATS
        assert "liqi_requests_total{" not in metrics  # warm-up is not client traffic
        answer = http.post("/api/predict/mnist", content=mnist_request(1))
        assert answer.status_code == 200


@pytest.mark.tf
def test_a_failing_request_keeps_the_server_not_ready(
    mnist_saved_model: Path, tmp_path: Path
) -> None:
    warmup = tmp_path / "wrong-shape.bin"
    warmup.write_bytes(mnist_request(1, width=5))
    options = mnist_options(mnist_saved_model, tmp_path, warmup)
    with live_model_server(build_app(options), ready=False) as server, server.client() as http:
        deadline = time.monotonic() + 120
        ready = http.get("/readyz")
        while "warm-up" not in ready.text and time.monotonic() < deadline:
            time.sleep(0.05)
            ready = http.get("/readyz")
        assert ready.status_code == 503
        reason = ready.json()["reasons"][0]
        assert reason.startswith(f"warm-up request 1 of 1 from {warmup} failed: 400 ")
        assert "images" in reason  # the codec names the input and its shape
        assert http.get("/v2/health/ready").status_code == 503
        assert http.post("/api/predict/mnist", content=mnist_request(1)).status_code == 200


@pytest.mark.tf
def test_a_failing_request_ends_the_server_with_code_3(
    mnist_saved_model: Path, tmp_path: Path
) -> None:
    warmup = tmp_path / "requests.txt"
    good = json.dumps({"instances": [[0.0] * 784]})
    warmup.write_text(f"{good}\n{json.dumps({'instances': [[0.0] * 5]})}\n{good}\n")
    state_file = tmp_path / "state.json"
    args = [str(mnist_saved_model), "--name", "mnist", "--port", "0"]
    args += ["--warmup-file", str(warmup), "--exit-on-load-failure"]
    args += ["--state-file", str(state_file)]
    result = serve_process(args, tmp_path / "home")
    assert result.returncode == 3, result.stderr
    prefix = f"warm-up request 2 of 3 from {warmup} failed: 400 "
    assert f"Error: {prefix}" in result.stderr
    assert "Serving mnist" not in result.stdout
    state = json.loads(state_file.read_text())
    assert state["state"] == "failed"
    assert state["exit_code"] == 3
    assert state["reason"].startswith(prefix)


COUNTER_PROCESSOR = """
    class Counter:
        def initialize(self):
            self.seen = []

        def process(self, data):
            if data == b"count":
                return ",".join(sorted(set(self.seen))) + f" x{len(self.seen)}", 200
            self.seen.append(data.decode())
            return data.upper(), 200
"""


def test_a_txt_file_for_a_python_processor(tmp_path: Path) -> None:
    code = tmp_path / "counter"
    code.mkdir()
    (code / "app.py").write_text(textwrap.dedent(COUNTER_PROCESSOR))
    warmup = tmp_path / "requests.txt"
    warmup.write_text('hello\n{"a": 1}\n')
    state_file = tmp_path / "state.json"
    env = {**os.environ, "LIQI_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "liqi", "serve", str(code), "--processor", "python"]
    command += ["--processor-entry", "app.py", "--port", "0", "--warmup-file", str(warmup)]
    command += ["--state-file", str(state_file)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        state: dict[str, object] = {}
        while state.get("state") != "ready" and process.poll() is None:
            assert time.monotonic() < deadline, state
            time.sleep(0.05)
            state = json.loads(state_file.read_text()) if state_file.exists() else {}
        assert state.get("state") == "ready", process.communicate(timeout=30)
        url = f"{state['url']}/api/predict/counter"
        answer = httpx.post(url, content=b"count", timeout=30, trust_env=False)
        assert answer.text == 'hello,{"a": 1} x10'
    finally:
        process.terminate()
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert b"warmed up: 2 request(s) x 5 from" in err
    assert json.loads(state_file.read_text())["state"] == "stopped"


def test_a_missing_file_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "app.py").write_text("class P:\n    def process(self, d):\n")
    missing = tmp_path / "nowhere.bin"
    args = [str(tmp_path / "model"), "--warmup-file", str(missing), "--port", "0"]
    result = serve_process(args, tmp_path / "home")
    assert result.returncode == 4, result.stderr
    assert f"Error: Warm-up file {missing} does not exist. Check --warmup-file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.tf
def test_a_newest_version_that_fails_is_a_failed_first_load(
    mnist_saved_model: Path, tmp_path: Path
) -> None:
    """Without --exit-on-load-failure version 1 would serve; with it, the start failed."""
    versions = tmp_path / "mnist"
    shutil.copytree(mnist_saved_model, versions / "1")
    (versions / "2").mkdir()
    (versions / "2" / "saved_model.pb").write_bytes(b"not a protobuf")
    failures: list[str] = []
    options = ServeOptions(uri=str(versions), cache_dir=tmp_path / "cache", poll_interval_s=0)
    app = build_app(options, on_failed=failures.append)
    with live_model_server(app, ready=False):
        deadline = time.monotonic() + 120
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.manager.get("mnist").available()[0].version == 1
    assert len(failures) == 1
    assert failures[0].startswith("Model 'mnist' version 2 failed to load: ")
    assert not app.ready
