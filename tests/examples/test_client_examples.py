"""The examples of examples/mnist/clients/ run as real processes against a real service (the
seed's MNIST model, one instance, with a token) through the gateway of a real control plane:
the liqi Python client in its three protocols, the EAS SDK's README example in the real SDK's
venv and ported to liqi, curl, and the JavaScript client. Each must print what the service
itself answers (asked here with `liqi.PredictClient`): the softmax model misreads some images,
so no digit is hard-coded.

One instance start in all; the examples' processes are the only other cost.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from liqi import PredictClient, TFRequest, TFResponse
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import NotFoundError
from tests.services.conftest import PROJECT, seed_model, seed_spec, wait_running
from tests.support.servers import kill_instances, live_server
from tests.support.tools import built_js_client

pytestmark = [pytest.mark.tf, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "examples" / "mnist" / "clients"
SERVICE = "client_examples"
COUNT = 20
LINE = re.compile(r"image (\d+): predicted (\d), label (\d)")


@dataclass(frozen=True)
class Service:
    endpoint: str  # the control plane; the service's gateway is <endpoint>/api/predict/<name>
    name: str
    token: str

    def flags(self) -> list[str]:
        return ["--endpoint", self.endpoint, "--service", self.name, "--token", self.token]


@dataclass(frozen=True)
class Expected:
    """The first COUNT test images, their labels and the digits the service gives them."""

    images: npt.NDArray[np.float32]
    labels: list[int]
    scores: npt.NDArray[np.float32]

    @property
    def digits(self) -> list[int]:
        return [int(d) for d in self.scores.argmax(axis=1)]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path) -> Iterator[Service]:
    """One MNIST service with a generated token, one instance; deleted at the end."""
    home = tmp_path_factory.mktemp("client_examples") / "home"
    try:
        with live_server(home, None) as live, live.admin() as admin:
            seed_model(admin, mnist_saved_model)
            admin.create_service(seed_spec(SERVICE, generate_token="true"), project=PROJECT)
            try:
                wait_running(admin, SERVICE, timeout_s=240)
                token = admin.service_token(SERVICE).token
                assert token
                yield Service(live.url, SERVICE, token)
            finally:
                with contextlib.suppress(NotFoundError):
                    admin.delete_service(SERVICE)
                admin.wait_service_deleted(SERVICE, timeout_s=60)
    finally:
        kill_instances(home)


def service_scores(service: Service, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The service's own answer, through the gateway."""
    with PredictClient(service.endpoint, service.name, token=service.token) as client:
        scores: npt.NDArray[np.float32] = client.predict({"images": images})["scores"]
    return scores


@pytest.fixture(scope="module")
def expected(service: Service) -> Expected:
    test = read_data_sets(str(builtin_dir())).test
    images = test.images[:COUNT].astype(np.float32)
    found = Expected(images, [int(d) for d in test.labels[:COUNT]], service_scores(service, images))
    right = sum(d == label for d, label in zip(found.digits, found.labels, strict=True))
    assert right >= 0.8 * COUNT, (found.digits, found.labels)
    return found


def run(
    command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run an example; the ambient LIQI_* settings must not reach it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LIQI_")}
    env = {**clean, **(env or {})}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=cwd, timeout=180, check=False
    )


def succeed(command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> str:
    """Run an example that must succeed; its stdout."""
    done = run(command, env, cwd)
    assert done.returncode == 0, f"{command}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


def check_printed(stdout: str, expected: Expected, *, accuracy: bool = True) -> None:
    """`image i: predicted P, label L` for each image (P the service's digit), then, with
    ``accuracy``, `accuracy: R/N = R/N as 0.xx`."""
    lines = stdout.strip().splitlines()
    matches = [LINE.fullmatch(line) for line in lines[:COUNT]]
    assert all(matches), stdout
    assert [int(m[1]) for m in matches if m] == list(range(COUNT))
    assert [int(m[2]) for m in matches if m] == expected.digits, stdout
    assert [int(m[3]) for m in matches if m] == expected.labels, stdout
    right = sum(d == label for d, label in zip(expected.digits, expected.labels, strict=True))
    assert lines[COUNT:] == (
        [f"accuracy: {right}/{COUNT} = {right / COUNT:.2f}"] if accuracy else []
    )


@pytest.mark.parametrize("protocol", ["eas", "tfserving", "v2"])
def test_python_sdk(service: Service, expected: Expected, protocol: str) -> None:
    script = str(CLIENTS / "python_sdk.py")
    command = [sys.executable, script, *service.flags(), "--protocol", protocol]
    check_printed(succeed([*command, "--count", str(COUNT)]), expected)


def test_python_sdk_takes_its_settings_from_the_environment(
    service: Service, expected: Expected
) -> None:
    env = {
        "LIQI_ENDPOINT": service.endpoint,
        "LIQI_SERVICE": service.name,
        "LIQI_TOKEN": service.token,
        "LIQI_PROTOCOL": "tfserving",
        "LIQI_COUNT": str(COUNT),
    }
    check_printed(succeed([sys.executable, str(CLIENTS / "python_sdk.py")], env), expected)


def test_python_sdk_with_a_wrong_token_says_so(service: Service) -> None:
    script = str(CLIENTS / "python_sdk.py")
    command = [sys.executable, script, *service.flags()[:4], "--token", "wrong"]
    done = run(command)
    assert done.returncode == 1
    assert done.stderr.startswith("AuthenticationError: "), done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_eas_sdk_example_in_the_real_sdk(
    service: Service, expected: Expected, eas_python: str
) -> None:
    script = str(CLIENTS / "eas_sdk_predict.py")
    # The SDK's venv has no liqi: the script must not need it.
    check = subprocess.run([eas_python, "-c", "import liqi"], capture_output=True, check=False)
    assert check.returncode != 0
    check_printed(succeed([eas_python, script, *service.flags(), "--count", str(COUNT)]), expected)


def test_eas_sdk_example_ported_to_liqi(service: Service, expected: Expected) -> None:
    script = str(CLIENTS / "eas_sdk_predict.py")
    command = [sys.executable, script, "--liqi", *service.flags(), "--count", str(COUNT)]
    check_printed(succeed(command), expected)


def stroke() -> npt.NDArray[np.float32]:
    """The image curl.sh sends: a "1", columns 13 and 14 of rows 4 to 23."""
    image = np.zeros((28, 28), np.float32)
    image[4:24, 13:15] = 1.0
    return image.reshape(1, 784)


def test_curl_script(service: Service, expected: Expected, tmp_path: Path) -> None:
    assert shutil.which("curl"), "curl is not installed: examples/mnist/clients/curl.sh needs it"
    request = TFRequest("serving_default")
    request.add_feed("images", [3, 784], TFRequest.DT_FLOAT, expected.images[:3])
    request.add_fetch("scores")
    (tmp_path / "request.pb").write_bytes(request.to_string())
    command = ["bash", str(CLIENTS / "curl.sh"), *service.flags(), "--body", "request.pb"]
    out = succeed(command, cwd=tmp_path).splitlines()
    gateway = f"{service.endpoint}/api/predict/{service.name}"

    # 1. The signature.
    assert out[0] == f"== GET {gateway}"
    signature = json.loads(out[1])
    assert signature["inputs"] == [{"name": "images", "shape": [-1, 784], "type": "DT_FLOAT"}]
    assert signature["outputs"] == [{"name": "scores", "shape": [-1, 10], "type": "DT_FLOAT"}]
    # 2. TF Serving JSON: the stroke's scores, as the service gives them to PredictClient.
    assert out[2] == f"== POST {gateway}/v1/models/{service.name}:predict"
    predictions = np.asarray(json.loads(out[3])["predictions"], np.float32)
    np.testing.assert_allclose(predictions, service_scores(service, stroke()), atol=1e-6)
    # 3. EAS protobuf: the answer saved to answer.pb (the default) in the working directory.
    assert out[4] == f"== POST {gateway} (request.pb)"
    answer = tmp_path / "answer.pb"
    assert out[5:] == [f"saved the PredictResponse ({answer.stat().st_size} bytes) to answer.pb"]
    scores = TFResponse.from_bytes(answer.read_bytes()).get_array("scores")
    np.testing.assert_allclose(scores, expected.scores[:3], atol=1e-6)


def test_curl_script_with_a_wrong_token_fails_with_the_gateways_message(
    service: Service,
) -> None:
    command = ["bash", str(CLIENTS / "curl.sh"), *service.flags()[:4], "--token", "wrong"]
    done = run(command)
    assert done.returncode != 0
    assert "Missing or wrong token" in done.stdout + done.stderr


@pytest.fixture(scope="module")
def node() -> str:
    """Node, with clients/js/dist built when it is missing."""
    node = shutil.which("node")
    assert node, "the JavaScript client's example needs Node >= 18"
    built_js_client()
    return node


@pytest.mark.parametrize("protocol", ["eas", "tfserving"])
def test_node_example(service: Service, expected: Expected, node: str, protocol: str) -> None:
    flags = service.flags()
    if protocol != "eas":  # TF Serving goes to a sub-path of the service's gateway URL
        flags[1] = f"{service.endpoint}/api/predict/{service.name}"
    script = str(CLIENTS / "node_predict.mjs")
    command = [node, script, *flags, "--protocol", protocol, "--count", str(COUNT)]
    check_printed(succeed(command), expected, accuracy=False)
