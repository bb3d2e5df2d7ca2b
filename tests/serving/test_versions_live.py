"""Versions on a live server: a hot swap under a request loop with zero failures, a broken
version that leaves the old one serving, labels, and the `liqi serve` process (SIGTERM)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from liqi.core.version_policy import VersionPolicy
from liqi.serving.manager import ModelOptions
from liqi.serving.server import ServeOptions, build_app
from tests.support.model_server import live_model_server, wait_ready
from tests.support.servers import LiveServer

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]

ONE_ROW = {
    "inputs": [{"name": "images", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]
}


def publish(model: Path, versions: Path, number: int) -> None:
    """Copy a version in as a deployer would: to a temp name, then one rename."""
    staging = versions / f".tmp-{number}"
    shutil.copytree(model, staging)
    staging.rename(versions / str(number))


def wait_for(condition: object, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise TimeoutError("condition not met")


def test_hot_swap_has_zero_failures(mnist_saved_model: Path, tmp_path: Path) -> None:
    versions = tmp_path / "mnist"
    versions.mkdir()
    publish(mnist_saved_model, versions, 1)
    options = ServeOptions(uri=str(versions), cache_dir=tmp_path / "cache", poll_interval_s=0.2)
    seen: Counter[str] = Counter()
    failures: list[str] = []
    stop = threading.Event()

    def loop(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
            for _ in range(100_000):  # bounded; stopped by the event long before
                if stop.is_set():
                    return
                answer = http.post("/v2/models/mnist/infer", json=ONE_ROW)
                if answer.status_code != 200:
                    failures.append(f"{answer.status_code} {answer.text}")
                else:
                    seen[answer.json()["model_version"]] += 1

    with live_model_server(build_app(options)) as server:
        assert server.app.manager.get("mnist").name == "mnist"  # named after the folder
        workers = [threading.Thread(target=loop, args=(server.url,)) for _ in range(4)]
        for worker in workers:
            worker.start()
        try:
            wait_for(lambda: seen["1"] > 20)
            publish(mnist_saved_model, versions, 2)
            wait_for(lambda: seen["2"] > 20)
            model = server.app.manager.get("mnist")
            wait_for(lambda: model.versions[1].state.value == "END")
            # A broken version 3: reported, and version 2 keeps serving.
            (versions / "3").mkdir()
            (versions / "3" / "saved_model.pb").write_bytes(b"not a protobuf")
            wait_for(lambda: 3 in model.versions and model.versions[3].state.value == "FAILED")
            before = seen["2"]
            wait_for(lambda: seen["2"] > before + 20)
        finally:
            stop.set()
            for worker in workers:
                worker.join(30)
        status = httpx.get(f"{server.url}/v1/models/mnist", trust_env=False).json()
    assert failures == []
    assert seen["1"] > 0
    assert seen["2"] > 0
    states = {s["version"]: s for s in status["model_version_status"]}
    assert states["2"]["state"] == "AVAILABLE"
    assert states["1"]["state"] == "END"
    assert states["3"]["state"] == "END"
    assert "3" in states
    assert "Cannot load" in states["3"]["status"]["error_message"]


def test_several_versions_and_labels(mnist_saved_model: Path, tmp_path: Path) -> None:
    versions = tmp_path / "mnist"
    versions.mkdir()
    publish(mnist_saved_model, versions, 1)
    publish(mnist_saved_model, versions, 2)
    options = ServeOptions(
        uri=str(versions),
        cache_dir=tmp_path / "cache",
        poll_interval_s=0,
        model=ModelOptions(policy=VersionPolicy.parse("all"), labels={"stable": 1, "canary": 2}),
    )
    row = {"instances": [[0.0] * 784]}
    with live_model_server(build_app(options)) as server, server.client() as http:
        for label, version in (("stable", "1"), ("canary", "2")):
            answer = http.post(f"/v1/models/mnist/labels/{label}:predict", json=row)
            assert answer.status_code == 200
            v2 = http.post(f"/v2/models/mnist/versions/{version}/infer", json=ONE_ROW)
            assert v2.json()["model_version"] == version
        latest = http.post("/v2/models/mnist/infer", json=ONE_ROW)
        assert latest.json()["model_version"] == "2"
        assert http.get("/v2/models/mnist/versions/1/ready").status_code == 200
        assert http.get("/v2/models/mnist/versions/5/ready").status_code == 503


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_liqi_serve_process_drains_on_sigterm(mnist_saved_model: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LIQI_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "liqi", "serve", str(mnist_saved_model)]
    command += ["--name", "mnist", "--port", str(port), "--max-batch-wait-ms", "2000"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_ready(url)
        results: list[int] = []

        def call() -> None:
            with httpx.Client(timeout=30, trust_env=False) as http:
                answer = http.post(
                    f"{url}/v1/models/mnist:predict", json={"instances": [[0.0] * 784]}
                )
                results.append(answer.status_code)

        callers = [threading.Thread(target=call) for _ in range(3)]
        for caller in callers:
            caller.start()
        _wait_queued(url, 3)  # the calls wait in a 2 s batching window
        process.send_signal(signal.SIGTERM)
        for caller in callers:
            caller.join(30)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert results == [200, 200, 200]
    assert process.returncode == 0, err
    assert f"Serving mnist version 1 at {url}" in out
    assert "signature=serving_default" in err  # the startup line: model, version, signature


def _wait_queued(url: str, at_least: int, timeout_s: float = 20.0) -> None:
    """Until /metrics shows ``at_least`` requests waiting for the model."""
    deadline = time.monotonic() + timeout_s
    depth = 0.0
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics", timeout=5, trust_env=False).text
        depth = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("liqi_queue_depth{")
        )
        if depth >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError(f"only {depth:g} requests queued after {timeout_s}s")


def test_a_folder_without_a_model_is_reported_not_ready(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.txt").write_text("no model here")
    options = ServeOptions(uri=str(folder), cache_dir=tmp_path / "cache", poll_interval_s=0.2)
    with live_model_server(build_app(options), ready=False) as server:
        deadline = time.monotonic() + 30
        answer = httpx.get(f"{server.url}/readyz", trust_env=False)
        while "failed to load" not in answer.text and time.monotonic() < deadline:
            time.sleep(0.05)
            answer = httpx.get(f"{server.url}/readyz", trust_env=False)
        assert answer.status_code == 503
        assert "README.txt" in answer.text
        assert "--processor" in answer.text
        predict = httpx.post(f"{server.url}/v1/models/notes:predict", json={}, trust_env=False)
        assert predict.status_code == 503
        assert "failed to load" in predict.json()["error"]


def start_serve(args: list[str], home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LIQI_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, "-m", "liqi", "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_announced(process: subprocess.Popen[str], text: str, *, timeout_s: float) -> bool:
    """Whether the process printed a line holding ``text`` on stdout within the deadline."""
    found = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout_s)


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        return process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_two_servers_share_one_port(mnist_saved_model: Path, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(mnist_saved_model), "--name", "mnist", "--port", str(port)]
    first = start_serve(args, tmp_path / "home")
    second = start_serve(args, tmp_path / "home")
    try:
        # /readyz may be answered by either process: wait for each one's ready line.
        for process in (first, second):
            announced = wait_announced(process, "Serving mnist", timeout_s=120)
            assert announced, process.communicate(timeout=30)[1]
        for _ in range(20):  # fresh connections: the kernel spreads them over both
            answer = httpx.post(
                f"{url}/v1/models/mnist:predict",
                json={"instances": [[0.0] * 784]},
                trust_env=False,
            )
            assert answer.status_code == 200
    finally:
        stop(second)
        stop(first)
    assert first.returncode == 0
    assert second.returncode == 0


def test_serve_from_a_bucket(
    mnist_saved_model: Path, sqlite_server: LiveServer, tmp_path: Path
) -> None:
    with sqlite_server.admin() as client:
        client.create_bucket("models", project="default")
        for file in sorted(p for p in mnist_saved_model.rglob("*") if p.is_file()):
            key = f"exports/mnist/1/{file.relative_to(mnist_saved_model).as_posix()}"
            client.put_object("models", key, file.read_bytes())
    port = free_port()
    process = start_serve(["oss://models/exports/mnist/", "--port", str(port)], sqlite_server.home)
    try:
        wait_ready(f"http://127.0.0.1:{port}")
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/mnist:predict",
            json={"instances": [[0.0] * 784]},
            trust_env=False,
        )
    finally:
        out, err = stop(process)
    assert answer.status_code == 200, err
    assert len(answer.json()["predictions"][0]) == 10
    assert "Serving mnist version 1" in out
    cached = sqlite_server.home / "cache" / "models" / "models"
    assert any(p.name == "saved_model.pb" for p in cached.rglob("*"))
