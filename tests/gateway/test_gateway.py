"""The gateway on its own uvicorn, in front of real model servers (the exported MNIST
SavedModel) and probe upstreams, with a RouteTable the tests fill."""

from __future__ import annotations

import email.utils
import hashlib
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from liqi.core.batching import BatchPolicy
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.gateway.app import Gateway, with_gateway
from liqi.gateway.route_table import RouteTable, ServiceRoute, Upstream
from liqi.protocols import eas, eas_signature, tfserving, v2
from liqi.serving.app import ServeLimits
from liqi.serving.manager import ModelOptions
from liqi.serving.server import ServeOptions, build_app
from tests.gateway import ProbeApp, RawInstance, closed_port_url, serve, wait_until
from tests.support.model_server import LiveModelServer, live_model_server
from tests.support.servers import LiveServer

pytestmark = pytest.mark.timeout(300)

TOKEN = "gw-s3cr3t"


# -- servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return read_data_sets(str(builtin_dir())).test.images[:1000].astype(np.float32)


@pytest.fixture(scope="module")
def instances(
    mnist_saved_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[LiveModelServer]]:
    """Two model servers of the MNIST model, named like the service."""
    with (
        serve_mnist(mnist_saved_model, tmp_path_factory) as a,
        serve_mnist(mnist_saved_model, tmp_path_factory) as b,
    ):
        yield [a, b]


@contextmanager
def serve_mnist(export: Path, tmp: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    options = ServeOptions(
        uri=str(export),
        cache_dir=tmp.mktemp("cache"),
        name="mnist",
        poll_interval_s=0,
        model=ModelOptions(batching=BatchPolicy(max_batch_size=64)),
        limits=ServeLimits(max_body_bytes=16 * 2**20),
    )
    with live_model_server(build_app(options)) as server:
        yield server


@pytest.fixture(scope="module")
def probes() -> Iterator[list[tuple[ProbeApp, str]]]:
    apps = [ProbeApp("a"), ProbeApp("b")]
    with serve(apps[0]) as url_a, serve(apps[1]) as url_b:
        yield [(apps[0], url_a), (apps[1], url_b)]


@dataclass
class LiveGateway:
    url: str
    table: RouteTable
    gateway: Gateway
    http: httpx.Client
    routed: set[str] = field(default_factory=set)  # every instance id a route named

    def route(self, name: str, *upstreams: tuple[str, str], **fields: Any) -> None:
        fields.setdefault("state", "RUNNING")
        fields.setdefault("token", None)
        ups = tuple(Upstream(instance_id, url) for instance_id, url in upstreams)
        self.routed.update(instance_id for instance_id, _ in upstreams)
        self.table.set(ServiceRoute(name=name, upstreams=ups, **fields))

    def settled(self, *instance_ids: str) -> None:
        """Wait until no request is counted in flight on these instances."""
        wait_until(
            lambda: all(self.table.outstanding(i) == 0 for i in instance_ids),
            what=f"outstanding of {instance_ids} back to 0",
        )


async def fallback(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The app behind the gateway: answers lifespan, 404 for anything else."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"fallback"})


@contextmanager
def live_gateway(**options: Any) -> Iterator[LiveGateway]:
    table = RouteTable()
    gateway = Gateway(table, **options)
    with (
        serve(with_gateway(fallback, gateway), lifespan="on") as url,
        httpx.Client(base_url=url, timeout=60, trust_env=False) as http,
    ):
        live = LiveGateway(url, table, gateway, http)
        yield live
        live.settled(*live.routed)  # whatever the test did, nothing is left counted in flight
    # The lifespan closed the pool: no connection to any instance is left.
    assert gateway.pool.connections() == (0, 0)


@pytest.fixture
def gw() -> Iterator[LiveGateway]:
    with live_gateway() as live:
        yield live


@pytest.fixture
def mnist(gw: LiveGateway, instances: list[LiveModelServer]) -> LiveGateway:
    gw.route("mnist", ("i-a", instances[0].url))
    return gw


def eas_scores(body: bytes) -> np.ndarray:
    return eas.decode_predict_response(body).outputs["scores"]


def requests_served(server: LiveModelServer) -> float:
    text = httpx.get(f"{server.url}/metrics", trust_env=False).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("liqi_requests_total{")
    )


# -- the three protocols through the gateway --------------------------------------------------


def test_eas_protobuf_scores_equal_direct(
    mnist: LiveGateway, instances: list[LiveModelServer], images: np.ndarray
) -> None:
    body = eas.encode_predict_request({"images": images[:5]})
    through = mnist.http.post("/api/predict/mnist", content=body)
    direct = httpx.post(f"{instances[0].url}/api/predict/mnist", content=body, trust_env=False)
    assert through.status_code == 200, through.text
    assert through.content == direct.content
    assert eas_scores(through.content).shape == (5, 10)
    mnist.settled("i-a")


def test_tfserving_sub_path(
    mnist: LiveGateway, instances: list[LiveModelServer], images: np.ndarray
) -> None:
    body = tfserving.encode_predict_request({"images": images[:3]}, columnar=False)
    path = "/api/predict/mnist/v1/models/mnist:predict"
    through = mnist.http.post(path, content=body)
    direct = httpx.post(f"{instances[0].url}/v1/models/mnist:predict", content=body, timeout=30)
    assert through.status_code == 200, through.text
    assert through.headers["content-type"] == "application/json"
    np.testing.assert_allclose(
        through.json()["predictions"], direct.json()["predictions"], rtol=1e-6
    )
    status = mnist.http.get("/api/predict/mnist/v1/models/mnist")
    assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_v2_infer_sub_path(mnist: LiveGateway, images: np.ndarray) -> None:
    request = v2.encode_infer_request({"images": images[:2]})
    answer = mnist.http.post(
        "/api/predict/mnist/v2/models/mnist/infer",
        content=request.body,
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 200, answer.text
    assert v2.decode_infer_response(answer.content).outputs["scores"].shape == (2, 10)
    assert mnist.http.get("/api/predict/mnist/v2/health/ready").status_code == 200


def test_get_signature(mnist: LiveGateway, instances: list[LiveModelServer]) -> None:
    through = mnist.http.get("/api/predict/mnist")
    direct = httpx.get(f"{instances[0].url}/api/predict/mnist", trust_env=False)
    assert through.status_code == 200
    assert through.json() == direct.json()
    assert through.json()["inputs"][0]["name"] == "images"


def test_large_eas_body_is_streamed(
    mnist: LiveGateway, instances: list[LiveModelServer], images: np.ndarray
) -> None:
    body = eas.encode_predict_request({"images": images})  # 1000 rows, ~3 MB
    assert len(body) > mnist.gateway.retry_body_bytes
    through = mnist.http.post("/api/predict/mnist", content=body)
    direct = httpx.post(f"{instances[0].url}/api/predict/mnist", content=body, timeout=30)
    assert through.status_code == 200, through.text
    np.testing.assert_array_equal(eas_scores(through.content), eas_scores(direct.content))
    mnist.settled("i-a")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/predict/mnist/v1/models/mnist:predict", b'{"instances": [{"images": [1.0]}]}'),
        ("/api/predict/mnist/v1/models/mnist:predict", b"{not json"),
        ("/api/predict/mnist", b"\x00garbage protobuf"),
        ("/api/predict/mnist/v2/models/mnist/infer", b'{"inputs": []}'),
    ],
)
def test_error_answers_pass_through_unchanged(
    mnist: LiveGateway, instances: list[LiveModelServer], path: str, body: bytes
) -> None:
    through = mnist.http.post(path, content=body)
    direct_path = path.removeprefix("/api/predict/mnist") or "/api/predict/mnist"
    direct = httpx.post(f"{instances[0].url}{direct_path}", content=body, trust_env=False)
    assert direct.status_code == 400
    assert (through.status_code, through.content) == (direct.status_code, direct.content)
    assert through.headers["content-type"] == direct.headers["content-type"]
    mnist.settled("i-a")


# -- tokens ------------------------------------------------------------------------------------


def test_token_forms_accepted(gw: LiveGateway, instances: list[LiveModelServer]) -> None:
    gw.route("mnist", ("i-a", instances[0].url), token=TOKEN)
    body = eas.encode_predict_request({"images": np.zeros((1, 784), np.float32)})
    date = email.utils.formatdate(usegmt=True)
    signed = eas_signature.sign_request(
        token=TOKEN, body=body, date=date, path="/api/predict/mnist"
    )
    for headers in ({"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}"}, signed):
        answer = gw.http.post("/api/predict/mnist", content=body, headers=headers)
        assert answer.status_code == 200, (headers, answer.text)
        assert eas_scores(answer.content).shape == (1, 10)
    json_path = "/api/predict/mnist/v1/models/mnist:predict"
    json_body = b'{"instances": [{"images": [0.0]}]}'
    signed = eas_signature.sign_request(
        token=TOKEN, body=json_body, date=date, path=json_path, content_type="application/json"
    )
    answer = gw.http.post(json_path, content=json_body, headers=signed)
    assert answer.status_code == 400  # past the token: the model refuses the shape
    assert "expects shape" in answer.json()["error"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "needs a token: send 'Authorization: <token>'"),
        ({"Authorization": "wrong"}, "Missing or wrong token for service 'mnist'"),
        ({"Authorization": "Bearer wrong"}, "Missing or wrong token"),
        ({"Authorization": "EAS bm90IGEgc2lnbmF0dXJl"}, "Missing or wrong token"),
    ],
)
def test_wrong_or_missing_token_is_401(
    gw: LiveGateway, instances: list[LiveModelServer], headers: dict[str, str], message: str
) -> None:
    gw.route("mnist", ("i-a", instances[0].url), token=TOKEN)
    answer = gw.http.post("/api/predict/mnist", content=b"x", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["content-type"].startswith("text/plain")
    assert message in answer.text
    assert TOKEN not in answer.text
    answer = gw.http.post("/api/predict/mnist/v1/models/mnist:predict", headers=headers)
    assert answer.status_code == 401
    assert message in answer.json()["error"]
    gw.settled("i-a")


def test_signed_request_over_the_limit_is_413(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]), token=TOKEN, max_body_bytes=1000)
    body = b"x" * 5000
    date = email.utils.formatdate(usegmt=True)
    signed = eas_signature.sign_request(
        token=TOKEN, body=body, date=date, path="/api/predict/svc/echo"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while reading
        for _ in range(10):
            yield body[:500]

    answer = gw.http.post("/api/predict/svc/echo", content=chunks(), headers=signed)
    assert answer.status_code == 413
    assert "at most 1000 bytes" in answer.text


# -- no route, no instance, scale from zero ------------------------------------------------------


def test_unknown_service_is_404_naming_no_other(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]))
    gw.route("other", ("a", probes[0][1]))
    answer = gw.http.post("/api/predict/nope", content=b"{}")
    assert answer.status_code == 404
    message = "No service 'nope'. `liqi eas list` shows the services your key may use."
    assert answer.text == message
    answer = gw.http.post("/api/predict/nope/v2/models/nope/infer", content=b"{}")
    assert answer.json() == {"error": message}
    assert gw.table.take_request_counts() == {}


def test_no_ready_instance_is_503_with_the_reason(gw: LiveGateway) -> None:
    gw.route("svc", state="UPDATING", reason="instance i-2 is loading version 2")
    answer = gw.http.post("/api/predict/svc", content=b"x")
    assert answer.status_code == 503
    assert answer.text == (
        "Service 'svc' has no ready instance (state UPDATING): instance i-2 is loading version 2"
    )
    assert answer.headers["retry-after"] == "1"
    answer = gw.http.post("/api/predict/svc/v1/models/svc:predict", content=b"x")
    assert answer.status_code == 503
    assert "state UPDATING" in answer.json()["error"]
    assert gw.table.take_request_counts() == {"svc": 2}


def test_scale_from_zero_holds_the_request(gw: LiveGateway, probes: list[Any]) -> None:
    woken: list[str] = []
    wake = threading.Event()
    gw.table.on_wake = lambda name: (woken.append(name), wake.set())  # type: ignore[func-returns-value]
    gw.route("svc", state="STOPPED", scale_from_zero=True)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(gw.http.post, "/api/predict/svc/echo", content=b"held body")
        assert wake.wait(30), "the gateway did not wake the service"
        assert not held.done()
        gw.route("svc", ("a", probes[0][1]))  # the reconciler's instance is ready
        answer = held.result(timeout=30)
    assert answer.status_code == 200
    assert answer.content == b"held body"
    assert woken == ["svc"]
    gw.settled("a")


def test_scale_from_zero_hold_times_out() -> None:
    with live_gateway(hold_s=0.3) as gw:
        gw.route("svc", state="STOPPED", reason="scaled to zero", scale_from_zero=True)
        answer = gw.http.post("/api/predict/svc", content=b"x")
        assert answer.status_code == 503
        assert answer.text == (
            "Service 'svc' got no ready instance within 0.3 s (state STOPPED): scaled to zero"
        )
        assert answer.headers["retry-after"] == "1"


# -- choosing and failing over ------------------------------------------------------------------


def test_least_outstanding_spreads_requests(gw: LiveGateway, probes: list[Any]) -> None:
    (a, url_a), (b, url_b) = probes
    a.gate.clear()
    b.gate.clear()
    gw.route("svc", ("a", url_a), ("b", url_b))
    with ThreadPoolExecutor(4) as pool:
        futures = []
        for expected in ([1, 0], [1, 1], [2, 1], [2, 2]):
            futures.append(pool.submit(gw.http.post, "/api/predict/svc/hold", content=b""))
            wait_until(lambda e=expected: sorted((a.held, b.held), reverse=True) == e)
        assert (gw.table.outstanding("a"), gw.table.outstanding("b")) == (2, 2)
        a.gate.set()
        b.gate.set()
        answers = [f.result(timeout=30) for f in futures]
    assert sorted(r.headers["x-upstream"] for r in answers) == ["a", "a", "b", "b"]
    gw.settled("a", "b")


def test_concurrent_load_uses_both_instances(
    gw: LiveGateway, instances: list[LiveModelServer], images: np.ndarray
) -> None:
    gw.route("mnist", ("i-a", instances[0].url), ("i-b", instances[1].url))
    before = [requests_served(server) for server in instances]
    body = eas.encode_predict_request({"images": images[:1]})
    with ThreadPoolExecutor(16) as pool:
        answers = list(
            pool.map(lambda _: gw.http.post("/api/predict/mnist", content=body), range(128))
        )
    assert {a.status_code for a in answers} == {200}
    served = [requests_served(server) - b for server, b in zip(instances, before, strict=True)]
    assert sum(served) == 128
    assert min(served) >= 16, served
    gw.settled("i-a", "i-b")


def test_killed_instance_fails_over_then_503(gw: LiveGateway, probes: list[Any]) -> None:
    url_a = probes[0][1]
    with serve(ProbeApp("k")) as url_k:
        gw.route("svc", ("k", url_k))
        assert gw.http.get("/api/predict/svc/peer").status_code == 200  # pooled connection
    gw.route("svc", ("k", url_k), ("a", url_a))  # the table still lists the dead instance
    answers = [gw.http.post("/api/predict/svc/echo", content=b"%d" % i) for i in range(10)]
    assert [(r.status_code, r.headers["x-upstream"]) for r in answers] == [(200, "a")] * 10
    assert [r.content for r in answers] == [b"%d" % i for i in range(10)]
    big = b"b" * (3 * 2**20)  # streamed, not kept: still retried, nothing of it was sent
    answers = [gw.http.post("/api/predict/svc/echo", content=big) for _ in range(4)]
    assert [(r.status_code, r.headers["x-upstream"]) for r in answers] == [(200, "a")] * 4
    assert {len(r.content) for r in answers} == {len(big)}
    gw.route("svc", ("k", url_k), ("z", closed_port_url()))
    answer = gw.http.post("/api/predict/svc/echo", content=b"x")
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "1"
    assert answer.text.startswith("Service 'svc': no answer from instances ")
    assert "'k'" in answer.text
    assert "'z'" in answer.text
    gw.route("svc", ("k", url_k))
    answer = gw.http.post("/api/predict/svc/v1/models/svc:predict", content=b"x")
    assert answer.status_code == 503
    assert answer.json()["error"].startswith("Service 'svc': no answer from instance 'k'.")
    gw.settled("k", "a", "z")


# -- the retry rule: sent again only if none of it was sent, or the service is idempotent ---------


@contextmanager
def busy(gw: LiveGateway, instance_id: str) -> Iterator[None]:
    """Count a request in flight on ``instance_id``, so the gateway picks another first."""
    gw.table.begin(instance_id)
    try:
        yield
    finally:
        gw.table.end(instance_id)


def crash_then_probe(gw: LiveGateway, *, idempotent: bool) -> tuple[httpx.Response, Any]:
    """POST to a service whose first choice reads the request and closes the connection
    without answering (its process died on it); the second choice is a probe."""
    crasher, second = RawInstance("c", crash=True), ProbeApp("b")
    with crasher.serving() as url_c, serve(second) as url_b:
        gw.route("svc", ("c", url_c), ("b", url_b), idempotent=idempotent)
        with busy(gw, "b"):
            answer = gw.http.post("/api/predict/svc/echo", content=b"side effect")
        gw.settled("c", "b")
    assert crasher.bodies == [b"side effect"]  # it got the request, once
    return answer, (url_c, second)


def test_request_an_instance_crashed_on_is_not_repeated_when_not_idempotent(
    gw: LiveGateway,
) -> None:
    answer, (url_c, second) = crash_then_probe(gw, idempotent=False)
    assert second.seen["echo"] == 0
    assert answer.status_code == 502
    assert answer.text == (
        f"Service 'svc': no answer from instance 'c'. The instance at {url_c} closed the "
        "connection without answering. The request may have reached the instance and was not "
        "sent again, because service 'svc' is not idempotent (a python processor may have "
        'side effects). If sending a request twice is harmless, set "processor_idempotent": '
        "true in its service JSON."
    )


def test_request_an_instance_crashed_on_is_repeated_when_idempotent(gw: LiveGateway) -> None:
    answer, (_, second) = crash_then_probe(gw, idempotent=True)
    assert (answer.status_code, answer.content) == (200, b"side effect")
    assert answer.headers["x-upstream"] == "b"
    assert second.seen["echo"] == 1


@pytest.mark.parametrize("idempotent", [False, True])
def test_connect_failure_is_retried_on_another_instance(gw: LiveGateway, idempotent: bool) -> None:
    second = ProbeApp("b")
    with serve(second) as url_b:
        gw.route("svc", ("z", closed_port_url()), ("b", url_b), idempotent=idempotent)
        with busy(gw, "b"):
            answer = gw.http.post("/api/predict/svc/echo", content=b"once")
        gw.settled("z", "b")
    assert (answer.status_code, answer.content, answer.headers["x-upstream"]) == (200, b"once", "b")
    assert second.seen["echo"] == 1


@pytest.mark.parametrize("idempotent", [False, True])
def test_idle_connection_the_instance_closed_is_replaced(gw: LiveGateway, idempotent: bool) -> None:
    instance = RawInstance("k", idle_s=0.1)  # closes a connection idle for 0.1 s
    with instance.serving() as url:
        gw.route("svc", ("k", url), idempotent=idempotent)
        assert gw.http.post("/api/predict/svc/echo", content=b"one").content == b"one"
        wait_until(
            lambda: instance.idle_closes == 1, what="the instance closed the idle connection"
        )
        answer = gw.http.post("/api/predict/svc/echo", content=b"two")
        gw.settled("k")
    assert (answer.status_code, answer.content) == (200, b"two")
    assert instance.bodies == [b"one", b"two"]  # each sent once, on a connection of its own
    assert instance.connections == 2


# -- bodies, headers, connections ----------------------------------------------------------------


def test_large_bodies_stream_both_ways(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]))
    big = np.random.default_rng(0).integers(0, 256, 6 * 2**20, dtype=np.uint8).tobytes()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 2**16):
            yield big[start : start + 2**16]

    for content in (big, chunks()):
        answer = gw.http.post("/api/predict/svc/echo", content=content)
        assert answer.status_code == 200
        assert answer.headers["x-body-md5"] == hashlib.md5(big).hexdigest()
        assert answer.content == big
    answer = gw.http.get("/api/predict/svc/chunked", params={"parts": 50, "size": 100_000})
    assert len(answer.content) == 5_000_000
    gw.settled("a")


def test_over_limit_body_is_413(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]), max_body_bytes=1000)
    answer = gw.http.post("/api/predict/svc/echo", content=b"x" * 1000)
    assert answer.status_code == 200
    answer = gw.http.post("/api/predict/svc/echo", content=b"x" * 2000)
    assert answer.status_code == 413
    assert answer.text.startswith("The request body has 2000 bytes or more; this service takes")
    answer = gw.http.post(
        "/api/predict/svc/v1/models/svc:predict", content=(b"y" * 300 for _ in range(5))
    )
    assert answer.status_code == 413
    assert "at most 1000 bytes" in answer.json()["error"]
    gw.settled("a")


def test_headers_path_and_query_are_forwarded(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]))
    answer = gw.http.post(
        "/api/predict/svc/x%20y/headers?a=1&b=%20x",
        content=b"{}",
        headers={
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "1",
            "X-Keep": "2",
            "Proxy-Authorization": "Basic eA==",
            "TE": "trailers",
            "X-Forwarded-For": "10.0.0.1",
            "Authorization": "Bearer passed-on",
        },
    )
    assert answer.status_code == 200
    seen = answer.json()
    headers = dict(seen["headers"])
    assert seen["raw_path"] == "/api/predict/svc/x%20y/headers"
    assert seen["query"] == "a=1&b=%20x"
    assert headers["x-keep"] == "2"
    assert headers["authorization"] == "Bearer passed-on"
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["host"] == probes[0][1].removeprefix("http://")
    assert headers["content-length"] == "2"
    for dropped in ("x-hop", "proxy-authorization", "te"):
        assert dropped not in headers
    assert len(answer.headers.get_list("date")) == 1
    assert answer.headers.get_list("server") == ["uvicorn"]
    assert answer.headers["x-upstream"] == "a"


def test_keep_alive_connections_are_reused(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]))
    ports = {gw.http.get("/api/predict/svc/peer").text for _ in range(100)}
    assert len(ports) == 1
    assert gw.gateway.pool.connections(probes[0][1]) == (1, 1)
    assert gw.table.take_request_counts() == {"svc": 100}


def test_instance_too_slow_is_504() -> None:
    with live_gateway(read_timeout_s=0.2) as gw, serve(ProbeApp("s")) as url:
        gw.route("svc", ("s", url))
        answer = gw.http.get("/api/predict/svc/slow", params={"delay": "3"})
        assert answer.status_code == 504
        assert answer.text == f"The instance at {url} sent no answer within 0.2 s."
        answer = gw.http.get("/api/predict/svc/v1/slow", params={"delay": "3"})
        assert answer.json() == {"error": f"The instance at {url} sent no answer within 0.2 s."}
        assert gw.http.get("/api/predict/svc/slow", params={"delay": "0"}).status_code == 200
        gw.settled("s")


def test_upstream_status_passes_through(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]))
    answer = gw.http.get("/api/predict/svc/status", params={"code": "418"})
    assert (answer.status_code, answer.content) == (418, b"custom error")


def test_client_leaving_mid_answer_frees_everything(gw: LiveGateway, probes: list[Any]) -> None:
    probe, url = probes[0]
    gw.route("svc", ("a", url))
    before = probe.disconnects
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/predict/svc/drip HTTP/1.1\r\nhost: gw\r\n\r\n")
        received = b""
        while b"first" not in received:
            received += sock.recv(4096)
    gw.settled("a")
    wait_until(lambda: probe.disconnects == before + 1, what="the instance saw the client leave")
    wait_until(lambda: gw.gateway.pool.connections(url) == (0, 0), what="connection closed")


def test_client_leaving_before_the_answer(gw: LiveGateway, probes: list[Any]) -> None:
    gw.route("svc", ("a", probes[0][1]))
    with pytest.raises(httpx.ReadTimeout):
        gw.http.get("/api/predict/svc/slow", params={"delay": "0.5"}, timeout=0.1)
    gw.settled("a")
    assert gw.http.get("/api/predict/svc/peer").status_code == 200


# -- inside the control plane -------------------------------------------------------------------


def test_control_plane_serves_the_gateway_without_access_keys(sqlite_server: LiveServer) -> None:
    answer = httpx.post(f"{sqlite_server.url}/api/predict/nope", content=b"x", trust_env=False)
    assert answer.status_code == 404
    assert answer.text.startswith("No service 'nope'.")
    assert httpx.get(f"{sqlite_server.url}/healthz", trust_env=False).status_code == 200
    unsigned = httpx.get(f"{sqlite_server.url}/api/v1/whoami", trust_env=False)
    assert unsigned.status_code == 401  # the API still needs a signed request
