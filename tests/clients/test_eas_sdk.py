"""The real `eas-prediction` SDK from PyPI (in .venv-eas/, made by scripts/eas-sdk-venv since
it pins protobuf <= 3.20.3) runs its README example unchanged against a live `liqi serve`,
with its request signature and with a raw token, on real MNIST test images."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.clients.conftest import TOKEN
from tests.support.model_server import LiveModelServer

pytestmark = [pytest.mark.e2e, pytest.mark.tf, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]

# The eas-prediction README example; only the endpoint, token and values are filled in.
README_EXAMPLE = textwrap.dedent(
    """
    import json, sys
    from eas_prediction import PredictClient
    from eas_prediction import TFRequest

    if __name__ == '__main__':
        endpoint, token, auth, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
        client = PredictClient(endpoint, 'mnist')
        if auth == 'signature':
            client.set_token(token)
        else:  # the raw token, as EAS's curl/requests demos send it
            client.add_extra_headers({'Authorization': token})
        client.init()

        for values in json.load(open(images)):
            req = TFRequest('serving_default')
            req.add_feed('images', [1, 784], TFRequest.DT_FLOAT, values)
            resp = client.predict(req)
            scores = resp.get_values('scores')
            print(max(range(10), key=lambda i: scores[i]))
    """
)


@pytest.mark.parametrize("auth", ["signature", "raw"])
def test_eas_prediction_readme_example(
    eas_python: str,
    served_with_token: LiveModelServer,
    mnist_test: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    auth: str,
) -> None:
    images, labels = mnist_test
    values = tmp_path / "images.json"
    values.write_text(json.dumps(images[:40].tolist()))
    example = tmp_path / "example.py"
    example.write_text(README_EXAMPLE)
    command = [eas_python, str(example), served_with_token.url, TOKEN, auth, str(values)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    digits = [int(line) for line in done.stdout.split()]
    assert len(digits) == 40
    assert float((np.array(digits) == labels[:40]).mean()) >= 0.85


@pytest.mark.parametrize("zone", ["Pacific/Kiritimati", "Etc/GMT+12"], ids=["utc+14", "utc-12"])
def test_eas_prediction_signature_in_local_time_is_fresh(
    eas_python: str,
    served_with_token: LiveModelServer,
    mnist_test: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    zone: str,
) -> None:
    """The SDK writes its machine's local time and labels it GMT: the server's freshness
    check allows for any time zone."""
    images, _ = mnist_test
    values = tmp_path / "images.json"
    values.write_text(json.dumps(images[:2].tolist()))
    example = tmp_path / "example.py"
    example.write_text(README_EXAMPLE)
    command = [eas_python, str(example), served_with_token.url, TOKEN, "signature", str(values)]
    environ = {**os.environ, "TZ": zone}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=environ
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 2


def test_eas_prediction_wrong_token_is_refused(
    eas_python: str, served_with_token: LiveModelServer, tmp_path: Path
) -> None:
    values = tmp_path / "images.json"
    values.write_text(json.dumps([[0.0] * 784]))
    example = tmp_path / "example.py"
    example.write_text(README_EXAMPLE)
    command = [eas_python, str(example), served_with_token.url, "wrong", "signature", str(values)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode != 0
    assert "401" in done.stderr
