"""`liqi predict` in process (CliRunner) against a real `liqi serve` of MNIST."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner, Result

from liqi import PredictClient
from liqi.cli.main import cli
from tests.clients.conftest import TOKEN
from tests.support.model_server import LiveModelServer

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]

Mnist = tuple[np.ndarray, np.ndarray]


def run(
    *args: str, stdin: bytes | None = None, env: Mapping[str, str | None] | None = None
) -> Result:
    return CliRunner().invoke(cli, ["predict", *args], input=stdin, env=env)


def digits(result: Result) -> list[int]:
    assert result.exit_code == 0, result.output
    return np.asarray(orjson.loads(result.stdout)["scores"]).argmax(axis=1).tolist()


def test_json_bodies_npy_and_stdin(
    served: LiveModelServer, mnist_test: Mnist, tmp_path: Path
) -> None:
    images, _ = mnist_test
    with PredictClient(served.url, "mnist") as client:
        expected = client.predict({"images": images[:3]})["scores"].argmax(axis=1).tolist()
    body = tmp_path / "rows.json"
    body.write_bytes(orjson.dumps({"instances": images[:3].tolist()}))
    named = tmp_path / "named.json"
    named.write_bytes(orjson.dumps({"images": images[:3].tolist()}))
    npy = tmp_path / "images.npy"
    np.save(npy, images[:3])
    for protocol in ("eas", "tfserving", "v2"):
        common = ["mnist", "--endpoint", served.url, "--protocol", protocol]
        assert digits(run(*common, "--input", str(body))) == expected
        assert digits(run(*common, "--input", str(named))) == expected
        assert digits(run(*common, "--input", str(npy), "--input-name", "images")) == expected
    buffer = io.BytesIO()
    np.save(buffer, images[:3])
    env = {"LIQI_PREDICT_ENDPOINT": served.url.removeprefix("http://")}
    assert digits(run("mnist", "--input", "-", stdin=buffer.getvalue(), env=env)) == expected
    rows = orjson.dumps({"inputs": {"images": images[:3].tolist()}})
    assert digits(run("mnist", "--input", "-", stdin=rows, env=env)) == expected


def test_table_output(served: LiveModelServer, mnist_test: Mnist, tmp_path: Path) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, mnist_test[0][:1])
    result = run("mnist", "--endpoint", served.url, "--input", str(npy), "-o", "table")
    assert result.exit_code == 0, result.output
    assert "scores" in result.stdout
    assert "[1, 10] float32" in result.stdout


def test_token(served_with_token: LiveModelServer, mnist_test: Mnist, tmp_path: Path) -> None:
    npy = tmp_path / "one.npy"
    np.save(npy, mnist_test[0][:2])
    common = ["mnist", "--endpoint", served_with_token.url, "--input", str(npy)]
    signed = digits(run(*common, "--token", TOKEN))
    assert digits(run(*common, "--token", TOKEN, "--auth", "raw")) == signed
    assert len(signed) == 2
    refused = run(*common, "--token", "wrong")
    assert refused.exit_code == 3
    assert "401" in refused.stderr


def test_bad_input(served: LiveModelServer, tmp_path: Path) -> None:
    missing = run("mnist", "--endpoint", served.url, "--input", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2
    assert "Cannot read --input" in missing.stderr
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"images": [[1.0, 2.0]]}')
    shape = run("mnist", "--endpoint", served.url, "--input", str(wrong))
    assert shape.exit_code == 2
    assert "[-1, 784] float32" in shape.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text("not json")
    assert (
        "not valid JSON" in run("mnist", "--endpoint", served.url, "--input", str(garbage)).stderr
    )
    unknown = run("nope", "--endpoint", served.url, "--input", str(wrong))
    assert unknown.exit_code == 4
    # No endpoint: the service is looked up on the control plane, and there is no profile.
    no_profile: dict[str, str | None] = {"LIQI_PREDICT_ENDPOINT": "", "LIQI_HOME": str(tmp_path)}
    no_profile |= dict.fromkeys(("LIQI_PROFILE", "LIQI_ACCESS_ID", "LIQI_ACCESS_KEY"))
    no_endpoint = run("mnist", "--input", str(wrong), env=no_profile)
    assert no_endpoint.exit_code == 2
    assert "No access key configured" in no_endpoint.stderr
    assert "pass --endpoint URL" in no_endpoint.stderr
