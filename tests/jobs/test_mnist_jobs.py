"""The seed's training steps through `liqi pai`, with the real examples and TensorFlow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_commands import run
from tests.support.servers import LiveServer

pytestmark = pytest.mark.tf
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mnist"
VOLUMES = (
    "-Dvolumes=odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test"
)


@pytest.mark.timeout(240)
def test_seed_training_steps(sqlite_server: LiveServer) -> None:
    home = sqlite_server.home
    assert run(home, "resource", "add", str(EXAMPLES / "training_test.py")).exit_code == 0
    test_run = run(home, "pai", "-name", "tensorflow",
                   "-Dscript=odps://default/resources/training_test.py", VOLUMES)  # fmt: skip
    assert test_run.exit_code == 0, test_run.output
    assert "accuracy" in test_run.stdout

    assert run(home, "oss", "mb", "oss://wuji-xwt").exit_code == 0
    assert run(home, "oss", "mkdir", "oss://wuji-xwt/models/").exit_code == 0
    assert run(home, "resource", "add", str(EXAMPLES / "mnist_softmax.py")).exit_code == 0
    train = run(
        home, "pai", "-name", "tensorflow121",
        "-Dscript=odps://default/resources/mnist_softmax.py", VOLUMES,
        "-Dbuckets=oss://wuji-xwt/models/?role_arn=acs:ram::123456:role/aliyunodpspaidefaultrole&host=cn-hangzhou.oss.aliyun-inc.com",
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    listing = json.loads(
        run(home, "oss", "ls", "-r", "oss://wuji-xwt/models/", "-o", "json").output
    )
    keys = {o["key"] for o in listing["objects"]}
    assert "models/1/saved_model.pb" in keys
    assert any(k.startswith("models/1/variables/") for k in keys)
    model = json.loads(run(home, "model", "describe", "mnist_softmax", "-o", "json").output)
    assert model["latest_version"] == 1
    assert model["versions"][0]["uri"] == "oss://wuji-xwt/models/1/"
    jobs = json.loads(run(home, "job", "list", "-o", "json").output)
    assert model["versions"][0]["job_id"] == jobs[0]["id"]
    assert "registered model mnist_softmax version 1" in jobs[0]["reason"]


@pytest.mark.timeout(240)
def test_done_when_through_the_console(sqlite_server: LiveServer) -> None:
    home = sqlite_server.home
    statements = (
        f"add file {EXAMPLES / 'training_test.py'}; "
        'pai -name tensorflow -Dscript="odps://default/resources/training_test.py" '
        '-Dvolumes="odps://algo_platform/volumes/mnist/train,odps://algo_platform/volumes/mnist/test";'
    )
    result = run(home, "console", "-e", statements)
    assert result.exit_code == 0, result.output
    accuracy = next(line for line in result.stdout.splitlines() if line.startswith("accuracy"))
    assert float(accuracy.split()[-1]) > 0.8
    assert "SUCCEEDED" in result.stderr
