"""A browser page calling a service through the gateway of a control plane that allows its
origin: the instances, started from the control plane's environment, allow it too, and the
answer must still carry one Access-Control-Allow-Origin (browsers refuse two)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import numpy as np
import pytest

from liqi.errors import NotFoundError
from liqi.protocols import tfserving
from tests.services.conftest import PROJECT, seed_model, seed_spec, wait_running
from tests.support.servers import kill_instances, live_server

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]

PAGE = "http://127.0.0.1:8000"
NAME = "cors_svc"


def test_gateway_answers_carry_one_allow_origin(
    tmp_path: Path, mnist_saved_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIQI_CORS_ORIGINS", PAGE)  # what `liqi server start --cors-origin` sets
    home = tmp_path / "home"
    try:
        with live_server(home, None, cors_origins=(PAGE,)) as live, live.admin() as admin:
            seed_model(admin, mnist_saved_model)
            admin.create_service(seed_spec(NAME), project=PROJECT)
            try:
                service = wait_running(admin, NAME)
                instance = service.instances[0].url
                body = tfserving.encode_predict_request(
                    {"images": np.zeros((1, 784), np.float32)}, columnar=True
                )
                for url in (
                    f"{live.url}/api/predict/{NAME}/v1/models/{NAME}:predict",
                    f"{instance}/v1/models/{NAME}:predict",
                ):
                    answer = httpx.post(
                        url,
                        content=body,
                        headers={"Origin": PAGE, "Content-Type": "application/json"},
                        trust_env=False,
                    )
                    assert answer.status_code == 200, answer.text
                    assert answer.headers.get_list("access-control-allow-origin") == [PAGE], url
                    assert answer.headers.get_list("vary") == ["Origin"], url
            finally:
                with contextlib.suppress(NotFoundError):
                    admin.delete_service(NAME)
                admin.wait_service_deleted(NAME, timeout_s=60)
    finally:
        kill_instances(home)
