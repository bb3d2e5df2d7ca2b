"""`liqi predict SERVICE` without --endpoint: the service is looked up on a real control plane
(the profile of LIQI_HOME) and called through its gateway, on real `liqi serve` instances.

Two instance starts in all: the tokenless service's, and the token service's, which scales
from zero, so the first prediction wakes it through the gateway.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner, Result

from liqi import PredictClient
from liqi.cli.main import cli
from liqi.client import Client
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import NotFoundError
from tests.services.conftest import PROJECT, seed_model, seed_spec, wait_running
from tests.support.servers import LiveServer, kill_instances, live_server

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]

OPEN = "cli_pred_open"
TOKEN = "cli_pred_token"  # autoscaler min 0: no instance until a request wakes it
IDLE = "cli_pred_idle"  # no instance wanted
SERVICES = (OPEN, TOKEN, IDLE)
# The ambient environment must not choose the server, the key or the endpoint.
_AMBIENT = ("LIQI_PROFILE", "LIQI_ENDPOINT", "LIQI_ACCESS_ID", "LIQI_ACCESS_KEY", "LIQI_PROJECT")
UNSET: dict[str, str | None] = dict.fromkeys(
    (*_AMBIENT, "LIQI_PREDICT_ENDPOINT", "LIQI_PREDICT_TOKEN")
)


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """A control plane running OPEN (one instance), TOKEN (scaled to zero, with a token) and
    IDLE (RUNNING with no instance wanted); the services are deleted at the end."""
    home = tmp_path_factory.mktemp("predict_service") / "home"
    try:
        with live_server(home, None) as live, live.admin() as admin:
            seed_model(admin, mnist_saved_model)
            admin.create_service(seed_spec(OPEN), project=PROJECT)
            token_spec = seed_spec(
                TOKEN,
                generate_token="true",
                autoscaler={"min": 0, "max": 1, "strategies": {"qps": 100}},
            )
            token_spec["metadata"]["instance"] = 0
            admin.create_service(token_spec, project=PROJECT)
            idle_spec = seed_spec(IDLE)
            idle_spec["metadata"]["instance"] = 0
            admin.create_service(idle_spec, project=PROJECT)
            for name in (TOKEN, IDLE):
                assert not wait_running(admin, name).instances
            wait_running(admin, OPEN)
            try:
                yield live
            finally:
                _delete_all(admin)
    finally:
        kill_instances(home)


def _delete_all(admin: Client) -> None:
    for name in SERVICES:
        with contextlib.suppress(NotFoundError):
            admin.delete_service(name)
    for name in SERVICES:
        admin.wait_service_deleted(name, timeout_s=60)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, list[int]]:
    """Five real MNIST test images and their labels."""
    test = read_data_sets(str(builtin_dir())).test
    return test.images[:5].astype(np.float32), [int(d) for d in test.labels[:5]]


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, ["predict", *args], env={**UNSET, **env})


def home_env(plane: LiveServer) -> dict[str, str]:
    return {"LIQI_HOME": str(plane.home)}


def expected(plane: LiveServer, name: str, images: np.ndarray, labels: list[int]) -> list[int]:
    """The service's own digits for ``images`` (the SDK through the gateway): what the CLI
    must print. The model is a softmax regression: most, not all, digits are right."""
    with plane.admin() as admin:
        token = admin.service_token(name).token
    with PredictClient(plane.url, name, token=token) as client:
        scores = client.predict({"images": images})["scores"]
    digits = [int(d) for d in np.argmax(scores, axis=1)]
    assert sum(d == label for d, label in zip(digits, labels, strict=True)) >= len(labels) - 2
    return digits


def predicted(result: Result) -> list[int]:
    assert result.exit_code == 0, result.output
    scores = np.asarray(orjson.loads(result.stdout)["scores"])
    return [int(d) for d in scores.argmax(axis=1)]


def test_a_tokenless_service_by_name(
    plane: LiveServer, digits: tuple[np.ndarray, list[int]], tmp_path: Path
) -> None:
    images, labels = digits
    labels = expected(plane, OPEN, images, labels)
    npy = tmp_path / "digits.npy"
    np.save(npy, images)
    body = tmp_path / "digits.json"
    body.write_bytes(orjson.dumps({"instances": images.tolist()}))
    env = home_env(plane)
    assert predicted(run(env, OPEN, "--input", str(npy))) == labels
    assert predicted(run(env, OPEN, "--input", str(body))) == labels
    # TF Serving and V2 go through the gateway as sub-paths of the service's endpoint.
    for protocol in ("tfserving", "v2"):
        assert predicted(run(env, OPEN, "--input", str(npy), "--protocol", protocol)) == labels
    table = run(env, OPEN, "--input", str(npy), "-o", "table")
    assert table.exit_code == 0, table.output
    assert "[5, 10] float32" in table.stdout


def test_a_token_service_by_name_fetches_its_token(
    plane: LiveServer, digits: tuple[np.ndarray, list[int]], tmp_path: Path
) -> None:
    images, labels = digits
    npy = tmp_path / "digits.npy"
    np.save(npy, images[:3])
    env = home_env(plane)
    with plane.admin() as admin:
        info = admin.get_service(TOKEN)
        assert info.token_required
        assert (info.state, info.instances_ready) == ("RUNNING", 0)
        # Scaled to zero: the request is sent and held by the gateway while one starts.
        first = predicted(run(env, TOKEN, "--input", str(npy), "--timeout-s", "120"))
        assert admin.get_service(TOKEN).instances_ready == 1
    labels = expected(plane, TOKEN, images[:3], labels[:3])
    assert first == labels
    # The gateway does check the token: a wrong one is refused.
    refused = run(env, TOKEN, "--input", str(npy), "--token", "wrong")
    assert refused.exit_code == 3, refused.output
    assert "refused the token" in refused.stderr
    # The EAS signature covers the whole path, sub-paths (v1/..., v2/...) included.
    for protocol in ("eas", "tfserving", "v2"):
        for auth in ("signature", "raw"):
            answer = run(env, TOKEN, "--input", str(npy), "--protocol", protocol, "--auth", auth)
            assert predicted(answer) == labels, (protocol, auth)


def test_an_unknown_service_exits_4_naming_eas_list(plane: LiveServer, tmp_path: Path) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros((1, 784), np.float32))
    result = run(home_env(plane), "no_such_service", "--input", str(npy))
    assert result.exit_code == 4, result.output
    assert "Service 'no_such_service' does not exist" in result.stderr
    assert "`liqi eas list`" in result.stderr
    assert "--endpoint" in result.stderr


def test_a_service_with_no_instance_names_its_state(plane: LiveServer, tmp_path: Path) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros((1, 784), np.float32))
    env = home_env(plane)
    idle = run(env, IDLE, "--input", str(npy))
    assert idle.exit_code == 6, idle.output
    assert f"Service '{IDLE}' has no ready instance: it is RUNNING" in idle.stderr
    assert "0 of 0 wanted instances ready" in idle.stderr
    assert f"`liqi eas scale {IDLE} 1`" in idle.stderr
    with plane.admin() as admin:
        admin.stop_service(IDLE)
        stopped = admin.wait_service(IDLE, until={"STOPPED"}, timeout_s=60)
    stopped_reason = f" ({stopped.reason})" if stopped.reason else ""
    refused = run(env, IDLE, "--input", str(npy))
    assert refused.exit_code == 6, refused.output
    assert f"it is STOPPED{stopped_reason}," in refused.stderr
    assert f"`liqi eas start {IDLE}`" in refused.stderr


def test_with_no_profile_the_error_says_how_to_start_a_server(tmp_path: Path) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros((1, 784), np.float32))
    result = run({"LIQI_HOME": str(tmp_path / "empty")}, "mnist", "--input", str(npy))
    assert result.exit_code == 2, result.output
    assert "No access key configured" in result.stderr
    assert "`liqi server start`" in result.stderr
    assert "pass --endpoint URL" in result.stderr


def test_with_no_server_running_the_error_says_how_to_start_one(tmp_path: Path) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros((1, 784), np.float32))
    with socket.socket() as sock:  # a port nothing listens on once it is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        "LIQI_HOME": str(tmp_path / "empty"),
        "LIQI_ENDPOINT": f"http://127.0.0.1:{port}",
        "LIQI_ACCESS_ID": "someone",
        "LIQI_ACCESS_KEY": "secret",
    }
    result = run(env, "mnist", "--input", str(npy))
    assert result.exit_code == 6, result.output
    assert f"Cannot reach the liqi server at http://127.0.0.1:{port}" in result.stderr
    assert "`liqi server start`" in result.stderr
    assert "pass --endpoint URL" in result.stderr


def test_importing_the_cli_loads_no_numpy_or_protobuf() -> None:
    code = (
        "import json, sys\n"
        "import liqi.cli.main\n"
        "heavy = ('numpy', 'google.protobuf', 'liqi.client.predict', 'tensorflow')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []
