"""The model server on real uvicorn with the real MNIST SavedModel: the three protocols,
their error formats, auth, limits and metrics."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from liqi.core.batching import BatchPolicy
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.protocols import eas, eas_signature, tfserving
from liqi.serving.app import ServeLimits
from liqi.serving.manager import ModelOptions
from liqi.serving.server import ServeOptions, build_app
from tests.support.model_server import LiveModelServer, live_model_server

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]

TOKEN = "s3cr3t-token"


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    test = read_data_sets(str(builtin_dir())).test
    return test.images[:200].astype(np.float32), test.labels[:200]


@pytest.fixture(scope="module")
def served(
    mnist_saved_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveModelServer]:
    options = ServeOptions(
        uri=str(mnist_saved_model),
        cache_dir=tmp_path_factory.mktemp("cache"),
        name="mnist",
        poll_interval_s=0,
        model=ModelOptions(batching=BatchPolicy(max_batch_size=64)),
        limits=ServeLimits(max_body_bytes=2 * 2**20),
    )
    with live_model_server(build_app(options)) as server:
        yield server


@pytest.fixture(scope="module")
def http(served: LiveModelServer) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(scores).argmax(axis=1) == labels).mean())


# -- TF Serving REST ------------------------------------------------------------------------


def test_tfserving_predict_rows_and_columns(
    http: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    body = tfserving.encode_predict_request({"images": images}, columnar=False)
    answer = http.post("/v1/models/mnist:predict", content=body)
    assert answer.status_code == 200, answer.text
    assert accuracy(answer.json()["predictions"], labels) >= 0.85
    columnar = {"signature_name": "predict_images", "inputs": {"images": images[:3].tolist()}}
    answer = http.post("/v1/models/mnist/versions/1:predict", json=columnar)
    assert answer.status_code == 200, answer.text
    assert np.asarray(answer.json()["outputs"]).shape == (3, 10)
    unnamed = http.post("/v1/models/mnist:predict", json={"instances": images[:2].tolist()})
    assert np.asarray(unnamed.json()["predictions"]).shape == (2, 10)


def test_tfserving_status_and_metadata(http: httpx.Client) -> None:
    status = http.get("/v1/models/mnist").json()
    assert status["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    metadata = http.get("/v1/models/mnist/metadata").json()
    assert metadata["model_spec"]["version"] == "1"
    signature = metadata["metadata"]["signature_def"]["signature_def"]["predict_images"]
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "784"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/v1/models/mnist:predict", b"{not json", 400, "not valid JSON"),
        ("POST", "/v1/models/mnist:predict", b'{"instances": [[NaN]]}', 400, "NaN or Infinity"),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [{"images": [1.0, 2.0]}]}',
            400,
            "Input 'images' expects shape/dtype [-1, 784] float32, received [1, 2]",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [{"pixels": [1.0]}]}',
            400,
            "pixels",
        ),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"signature_name": "nope", "instances": [[1.0]]}',
            400,
            "no signature 'nope'",
        ),
        ("POST", "/v1/models/mnist/versions/7:predict", b"{}", 404, "Available versions: 1"),
        ("POST", "/v1/models/other:predict", b"{}", 404, "Served models: mnist"),
        ("GET", "/v1/models/mnist:predict", b"", 405, "takes POST"),
        (
            "POST",
            "/v1/models/mnist:predict",
            b'{"instances": [{"images": {"b64": "!!not base64"}}]}',
            400,
            "invalid base64",
        ),
        ("POST", "/v1/models/mnist/versions/x:predict", b"{}", 400, "must be an integer"),
        ("POST", "/v1/models/mnist/labels/stable:predict", b"{}", 404, "no version label"),
    ],
)
def test_tfserving_errors(
    http: httpx.Client, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    answer = http.request(method, path, content=body)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


# -- V2 / tritonclient ----------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_v2_with_tritonclient(
    served: LiveModelServer, mnist_test: tuple[np.ndarray, np.ndarray], binary: bool
) -> None:
    images, labels = mnist_test
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("mnist")
        metadata = client.get_model_metadata("mnist")
        assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 784]}]
        tensor = triton.InferInput("images", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images, binary_data=binary)
        wanted = [triton.InferRequestedOutput("scores", binary_data=binary)]
        result = client.infer("mnist", [tensor], outputs=wanted)
        assert accuracy(result.as_numpy("scores"), labels) >= 0.85
        assert result.get_response()["model_version"] == "1"
    finally:
        client.close()


def test_v2_errors(http: httpx.Client) -> None:
    wrong = {"inputs": [{"name": "images", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    answer = http.post("/v2/models/mnist/infer", json=wrong)
    assert answer.status_code == 400
    assert "[-1, 784]" in answer.json()["error"]
    answer = http.post("/v2/models/mnist/infer", content=b'{"inputs": 3}')
    assert answer.status_code == 400
    assert "non-empty list" in answer.json()["error"]
    answer = http.post(
        "/v2/models/mnist/infer",
        content=b'{"inputs": []}xx',
        headers={"Inference-Header-Content-Length": "999"},
    )
    assert answer.status_code == 400
    assert "Inference-Header-Content-Length" in answer.json()["error"]
    assert http.get("/v2/models/other").status_code == 404


# -- EAS ------------------------------------------------------------------------------------


def test_eas_protobuf(http: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = mnist_test
    body = eas.encode_predict_request(
        {"images": images}, signature_name="predict_images", output_filter=["scores"]
    )
    answer = http.post("/api/predict/mnist", content=body)
    assert answer.status_code == 200, answer.text
    scores = eas.decode_predict_response(answer.content).outputs["scores"]
    assert scores.shape == (200, 10)
    assert accuracy(scores, labels) >= 0.85
    signature = http.get("/api/predict/mnist").json()
    assert signature["inputs"] == [{"name": "images", "shape": [-1, 784], "type": "DT_FLOAT"}]


def test_eas_json_and_errors(http: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = mnist_test
    answer = http.post("/api/predict/mnist", content=orjson.dumps([{"images": images[0].tolist()}]))
    assert answer.status_code == 200
    assert np.asarray(answer.json()["predictions"]).shape == (1, 10)
    body = eas.encode_predict_request({"images": images[:1]})
    truncated = http.post("/api/predict/mnist", content=body[: len(body) // 2])
    assert truncated.status_code == 400
    assert "PredictRequest" in truncated.text
    assert truncated.headers["content-type"].startswith("text/plain")
    assert http.post("/api/predict/mnist", content=b"").status_code == 400
    assert http.post("/api/predict/nothere", content=body).status_code == 404


def test_gateway_sub_paths(http: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = mnist_test
    body = {"instances": images[:1].tolist()}
    answer = http.post("/api/predict/mnist/v1/models/mnist:predict", json=body)
    assert answer.status_code == 200, answer.text
    assert http.get("/api/predict/mnist/v2/health/ready").json() == {"ready": True}


# -- limits, health, metrics, batching ------------------------------------------------------


def test_body_limit_and_the_server_keeps_serving(
    http: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    answer = http.post("/v1/models/mnist:predict", content=b"[" * (3 * 2**20))
    assert answer.status_code == 413
    assert "at most 2097152 bytes" in answer.json()["error"]
    images, _ = mnist_test
    assert http.post("/v1/models/mnist:predict", json={"instances": images[:1].tolist()}).is_success


def test_health_and_unknown_routes(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "live"}
    assert http.get("/readyz").json() == {"status": "ready"}
    missing = http.get("/nope")
    assert missing.status_code == 404
    assert "/api/predict/<model>" in missing.json()["error"]


def test_concurrent_requests_are_batched_and_counted(
    served: LiveModelServer, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    batches_before = _metric(served, "liqi_batch_size_rows_count")

    async def storm() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, timeout=60, trust_env=False) as c:
            calls = [
                c.post("/v1/models/mnist:predict", json={"instances": [images[i % 200].tolist()]})
                for i in range(96)
            ]
            return await asyncio.gather(*calls)

    answers = asyncio.run(storm())
    assert all(a.status_code == 200 for a in answers)
    predicted = [int(np.argmax(a.json()["predictions"][0])) for a in answers]
    correct = sum(p == labels[i % 200] for i, p in enumerate(predicted))
    assert correct / 96 >= 0.8
    batches = _metric(served, "liqi_batch_size_rows_count") - batches_before
    assert 0 < batches < 96  # fewer model calls than requests
    text = httpx.get(f"{served.url}/metrics", trust_env=False).text
    assert (
        'liqi_requests_total{model="mnist",protocol="tfserving",status="200",version="1"}' in text
    )
    assert 'liqi_model_version_state{model="mnist",state="AVAILABLE",version="1"} 1.0' in text
    assert "liqi_queue_depth" in text
    assert "liqi_model_load_seconds" in text


def _metric(served: LiveModelServer, name: str) -> float:
    text = httpx.get(f"{served.url}/metrics", trust_env=False).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


# -- token auth and timeouts (servers of their own) -----------------------------------------


def test_token_raw_bearer_and_eas_signature(mnist_saved_model: Path, tmp_path: Path) -> None:
    options = ServeOptions(
        uri=str(mnist_saved_model), cache_dir=tmp_path, name="mnist", poll_interval_s=0, token=TOKEN
    )
    body = eas.encode_predict_request({"images": np.zeros((1, 784), np.float32)})
    with live_model_server(build_app(options)) as server, server.client() as http:
        assert http.post("/api/predict/mnist", content=body).status_code == 401
        wrong = http.post("/api/predict/mnist", content=body, headers={"Authorization": "nope"})
        assert wrong.status_code == 401
        assert "wrong token" in wrong.text
        raw = http.post("/api/predict/mnist", content=body, headers={"Authorization": TOKEN})
        assert raw.status_code == 200
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/v1/models/mnist", headers=bearer).status_code == 200
        date = email.utils.formatdate(usegmt=True)
        signed = eas_signature.sign_request(
            token=TOKEN, body=body, date=date, path="/api/predict/mnist"
        )
        assert http.post("/api/predict/mnist", content=body, headers=signed).status_code == 200
        forged = eas_signature.sign_request(
            token="other", body=body, date=date, path="/api/predict/mnist"
        )
        assert http.post("/api/predict/mnist", content=body, headers=forged).status_code == 401
        assert http.get("/healthz").status_code == 200  # health stays open


def test_request_timeout_is_504(mnist_saved_model: Path, tmp_path: Path) -> None:
    options = ServeOptions(
        uri=str(mnist_saved_model),
        cache_dir=tmp_path,
        name="mnist",
        poll_interval_s=0,
        limits=ServeLimits(request_timeout_s=1e-6),
    )
    with live_model_server(build_app(options)) as server, server.client() as http:
        answer = http.post("/v1/models/mnist:predict", json={"instances": [[0.0] * 784]})
        assert answer.status_code == 504
        assert "did not answer within" in answer.json()["error"]
        assert http.get("/readyz").status_code == 200


def test_tfserving_classify(http: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = mnist_test
    examples = [{"images": image.tolist()} for image in images[:20]]
    answer = http.post("/v1/models/mnist:classify", json={"examples": examples})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert len(results) == 20
    assert all(len(pairs) == 10 for pairs in results)
    predicted = [int(np.argmax([score for _, score in pairs])) for pairs in results]
    assert np.mean(np.asarray(predicted) == labels[:20]) >= 0.75
