"""liqi.PredictClient and AsyncPredictClient against a real `liqi serve` of the MNIST
SavedModel: the EAS SDK's request classes, the direct form in three protocols, auth, errors,
retries and the client-side shape check."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from liqi import AsyncPredictClient, PredictClient, StringRequest, TFRequest
from liqi.asgi.listen import url_of
from liqi.client.predict_core import RetryPolicy
from liqi.errors import (
    AuthenticationError,
    InvalidRequestError,
    LiqiError,
    ModelError,
    NotFoundError,
    OverloadedError,
    ServerUnavailableError,
    UnexpectedResponseError,
)
from liqi.serving.server import bind
from tests.clients.conftest import TOKEN, ScriptedServer
from tests.support.model_server import LiveModelServer

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]

Mnist = tuple[np.ndarray, np.ndarray]


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(scores).argmax(axis=1) == labels).mean())


def test_eas_sdk_style_tfrequest(served: LiveModelServer, mnist_test: Mnist) -> None:
    images, labels = mnist_test
    client = PredictClient(served.url.removeprefix("http://"), "mnist")
    client.init()
    digits = []
    for image in images[:100]:
        request = TFRequest("serving_default")
        request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, image.tolist())
        request.add_fetch("scores")
        response = client.predict(request)
        assert response.get_tensor_shape("scores") == [1, 10]
        digits.append(int(np.argmax(response.get_values("scores"))))
    client.close()
    assert float((np.array(digits) == labels[:100]).mean()) >= 0.85


@pytest.mark.parametrize("protocol", ["eas", "tfserving", "v2"])
def test_direct_form_in_each_protocol(
    served: LiveModelServer, mnist_test: Mnist, protocol: str
) -> None:
    images, labels = mnist_test
    with PredictClient(served.url, "mnist", protocol=protocol) as client:  # type: ignore[arg-type]
        outputs = client.predict({"images": images})
        assert list(outputs) == ["scores"]
        assert outputs["scores"].shape == (200, 10)
        assert outputs["scores"].dtype == np.float32
        assert accuracy(outputs["scores"], labels) >= 0.85
        # float64 rows are cast client-side (same kind), as the server would
        again = client.predict({"images": images[:3].astype(np.float64)})
        np.testing.assert_allclose(again["scores"], outputs["scores"][:3], rtol=1e-5)


@pytest.mark.parametrize("auth", ["signature", "raw"])
@pytest.mark.parametrize("protocol", ["eas", "v2"])
def test_token_raw_and_signature(
    served_with_token: LiveModelServer, mnist_test: Mnist, auth: str, protocol: str
) -> None:
    images, labels = mnist_test
    with PredictClient(
        served_with_token.url,
        "mnist",
        TOKEN,
        auth=auth,  # type: ignore[arg-type]
        protocol=protocol,  # type: ignore[arg-type]
    ) as client:
        assert accuracy(client.predict({"images": images})["scores"], labels) >= 0.85


@pytest.mark.parametrize("protocol", ["eas", "tfserving", "v2"])
def test_a_service_endpoint_serves_every_protocol_signed_over_the_whole_path(
    served_with_token: LiveModelServer, mnist_test: Mnist, protocol: str
) -> None:
    """A service's endpoint (``.../api/predict/<name>``, as `liqi eas desc` prints it) is the
    EAS route itself and takes the other protocols as sub-paths; the signature covers the
    path the server sees, prefix included."""
    images, labels = mnist_test
    endpoint = f"{served_with_token.url}/api/predict/mnist"
    with PredictClient(endpoint, "mnist", TOKEN, protocol=protocol) as client:  # type: ignore[arg-type]
        assert accuracy(client.predict({"images": images})["scores"], labels) >= 0.85


def test_wrong_or_missing_token(served_with_token: LiveModelServer, mnist_test: Mnist) -> None:
    images, _ = mnist_test
    for token in ("not-the-token", None):
        with (
            PredictClient(served_with_token.url, "mnist", token) as client,
            pytest.raises(AuthenticationError) as caught,
        ):
            client.predict({"images": images[:1]})
    assert "'mnist'" in caught.value.message
    assert "401" in caught.value.message
    assert "needs a token" in caught.value.message


def test_unknown_model(served: LiveModelServer, mnist_test: Mnist) -> None:
    for protocol in ("eas", "tfserving", "v2"):
        client = PredictClient(served.url, "nope", protocol=protocol)  # type: ignore[arg-type]
        with client, pytest.raises(NotFoundError) as caught:
            client.predict({"images": mnist_test[0][:1]})
        assert "'nope'" in caught.value.message
        assert served.url in caught.value.message


def test_client_side_shape_check_sends_nothing(served: LiveModelServer, mnist_test: Mnist) -> None:
    for protocol in ("eas", "tfserving", "v2"):
        client = PredictClient(served.url, "mnist", protocol=protocol)  # type: ignore[arg-type]
        with client, pytest.raises(InvalidRequestError) as caught:
            client.predict({"images": np.zeros((2, 28, 28), np.float32)})
        assert "[-1, 784] float32" in caught.value.message
        assert "[2, 28, 28]" in caught.value.message
        assert "nothing was sent" in caught.value.message
    request = TFRequest()
    request.add_feed("images", [1, 10], TFRequest.DT_STRING, [b"x"] * 10)
    with PredictClient(served.url, "mnist") as client, pytest.raises(InvalidRequestError) as bad:
        client.predict(request)
    assert "[1, 10] bytes" in bad.value.message


def test_server_checks_when_the_client_does_not(served: LiveModelServer) -> None:
    with (
        PredictClient(served.url, "mnist", check_inputs=False) as client,
        pytest.raises(InvalidRequestError) as caught,
    ):
        client.predict({"images": np.zeros((1, 3), np.float32)})
    assert "expects shape/dtype [-1, 784] float32" in caught.value.message
    assert "HTTP 400" in caught.value.message


def test_add_feed_refuses_a_count_that_does_not_fit_the_shape() -> None:
    request = TFRequest("serving_default")
    with pytest.raises(InvalidRequestError, match="needs 784 values, but 3"):
        request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, [1.0, 2.0, 3.0])
    with pytest.raises(InvalidRequestError, match="not one TFRequest can carry"):
        request.add_feed("images", [1], 99, [1.0])


def test_string_request_to_custom_processor(custom_processor: LiveModelServer) -> None:
    with PredictClient(custom_processor.url, "doubler") as client:
        assert client.predict(StringRequest("21")).to_string() == b"42"
        assert str(client.predict(StringRequest(b"5"))) == "10"
        with pytest.raises(InvalidRequestError, match="not a number"):
            client.predict(StringRequest("teapot"))
        with pytest.raises(ModelError, match="ValueError"):
            client.predict(StringRequest("twelve"))


def test_503_is_retried_then_succeeds(scripted: ScriptedServer) -> None:
    scripted.script(failures=2, headers=[(b"retry-after", b"0")])
    with PredictClient(scripted.url, "svc", retries=3, backoff_s=0.01) as client:
        assert client.predict(StringRequest("x")).to_string() == b"ok"
    assert scripted.calls == 3


def test_503_after_the_last_retry_names_service_url_and_status(
    scripted: ScriptedServer,
) -> None:
    scripted.script(failures=100, body=b"queue of model svc is full")
    with (
        PredictClient(scripted.url, "svc", retries=2, backoff_s=0.01) as client,
        pytest.raises(OverloadedError) as caught,
    ):
        client.predict(StringRequest("x"))
    assert scripted.calls == 3
    message = caught.value.message
    assert "'svc'" in message
    assert f"{scripted.url}/api/predict/svc" in message
    assert "HTTP 503 on all 3 attempts" in message
    assert "queue of model svc is full" in message


@pytest.mark.parametrize("status", [400, 401, 404, 500])
def test_no_retry_on_other_statuses(scripted: ScriptedServer, status: int) -> None:
    scripted.script(failures=100, status=status, body=b"nope")
    with (
        PredictClient(scripted.url, "svc", retries=3, backoff_s=0.01) as client,
        pytest.raises(LiqiError) as caught,
    ):
        client.predict(StringRequest("x"))
    assert scripted.calls == 1
    assert "nope" in str(caught.value)


def test_retry_after_is_honoured() -> None:
    policy = RetryPolicy(retries=3, backoff_s=0.1, max_backoff_s=5)
    assert policy.delay_s(0) == pytest.approx(0.1)
    assert policy.delay_s(2) == pytest.approx(0.4)
    assert policy.delay_s(0, "2") == 2
    assert policy.delay_s(0, "60") == 5
    assert policy.delay_s(10) == 5
    assert policy.delay_s(1, "Thu, 01 Jan 1970 00:00:00 GMT") == pytest.approx(0.2)


def test_connection_refused_is_retried_then_clear() -> None:
    sock = bind("127.0.0.1", 0, reuse_port=False)
    url = url_of(sock)
    sock.close()  # nothing listens there any more
    with (
        PredictClient(url, "mnist", retries=2, backoff_s=0.01) as client,
        pytest.raises(ServerUnavailableError) as caught,
    ):
        client.predict({"images": np.zeros((1, 784), np.float32)})
    message = caught.value.message
    assert "Cannot reach service 'mnist'" in message
    assert url in message
    assert "after 3 attempt(s)" in message
    assert "ConnectError" in message


def test_answer_in_the_wrong_protocol(scripted: ScriptedServer) -> None:
    scripted.ok_body = b"<html><body>Welcome to nginx!</body></html>"
    scripted.ok_type = b"text/html"
    scripted.script(failures=0)
    for protocol in ("eas", "tfserving", "v2"):
        client = PredictClient(scripted.url, "svc", protocol=protocol)  # type: ignore[arg-type]
        with client, pytest.raises(UnexpectedResponseError) as caught:
            client.predict({"images": np.zeros((1, 784), np.float32)})
        assert "Welcome to nginx" in caught.value.message
        assert "text/html" in caught.value.message


def test_async_client(served_with_token: LiveModelServer, mnist_test: Mnist) -> None:
    images, labels = mnist_test

    async def main() -> list[np.ndarray]:
        async with AsyncPredictClient(served_with_token.url, "mnist", TOKEN) as client:
            batches = [images[i : i + 50] for i in range(0, 200, 50)]
            results = await asyncio.gather(*(client.predict({"images": b}) for b in batches))
            request = TFRequest("serving_default")
            request.add_feed("images", [1, 784], TFRequest.DT_FLOAT, images[0])
            response = await client.predict(request)
            assert int(np.argmax(response.get_values("scores"))) == labels[0]
            with pytest.raises(InvalidRequestError, match=r"\[-1, 784\]"):
                await client.predict({"images": np.zeros((1, 5), np.float32)})
            return [r["scores"] for r in results]

    scores = np.concatenate(asyncio.run(main()))
    assert accuracy(scores, labels) >= 0.85


def test_async_client_retries_503(scripted: ScriptedServer) -> None:
    scripted.script(failures=5)

    async def main() -> None:
        async with AsyncPredictClient(scripted.url, "svc", retries=1, backoff_s=0.01) as client:
            await client.predict(StringRequest("x"))

    with pytest.raises(OverloadedError, match="all 2 attempts"):
        asyncio.run(main())
    assert scripted.calls == 2


def test_setters_and_endpoint_forms(served: LiveModelServer, mnist_test: Mnist) -> None:
    client = PredictClient("127.0.0.1:1", "other")
    client.set_endpoint(served.url.removeprefix("http://") + "/")
    client.set_service_name("mnist")
    client.set_timeout(5000)
    client.set_retry_count(1)
    assert client.endpoint == served.url
    assert client.timeout_s == 5.0
    assert client.retry.retries == 1
    with client:
        assert client.predict({"images": mnist_test[0][:2]})["scores"].shape == (2, 10)
        signature = client.signature()
    assert signature is not None
    assert signature.name == "serving_default"
