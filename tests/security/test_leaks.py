"""The smaller leaks and crashes of issue 16, section 5, each tried as an attacker would: a
member of one project, or anyone on the network."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from liqi.client import Client
from liqi.errors import BucketNotFoundError, NotFoundError, PermissionDeniedError
from liqi.protocols import eas_signature
from liqi.serving.app import ServeLimits
from liqi.serving.server import ProcessorOptions, ServeOptions, build_app
from tests.integration.test_auth import admin_pair
from tests.support.model_server import live_model_server
from tests.support.servers import LiveServer, live_server
from tests.support.signed import send, signed_headers


@dataclass
class World:
    """Project ``a`` (the victim) and project ``b`` whose member ``bob`` is the attacker."""

    admin: Client
    bob: Client
    bob_id: str
    bob_secret: str


@pytest.fixture
def world(sqlite_server: LiveServer) -> Iterator[World]:
    with sqlite_server.admin() as admin:
        admin.create_project("project_a")
        admin.create_project("project_b")
        admin.create_bucket("alices-data", project="project_a")
        admin.create_bucket("bobs-models", project="project_b")
        admin.put_object("bobs-models", "models/1/saved_model.pb", b"not a model")
        b = admin.create_key(project="project_b", role="member", name="bob")
        assert b.secret
        with sqlite_server.client(b.access_id, b.secret) as bob:
            yield World(admin, bob, b.access_id, b.secret)


def idle_service(name: str) -> dict[str, object]:
    """A service with no instance: it exists, nothing runs."""
    return {
        "name": name,
        "model_path": "oss://bobs-models/models/",
        "processor": "tensorflow_cpu",
        "metadata": {"instance": 0, "cpu": 1, "memory": 1000},
    }


# -- 1. service logs: the instance is looked up, never joined as a path ------------------------


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_service_logs_instance_is_not_a_path(
    world: World, sqlite_server: LiveServer, how: str
) -> None:
    world.bob.create_service(idle_service("bobs"), project="project_b")
    victim = sqlite_server.home / "services" / "alices" / "i-1"
    victim.mkdir(parents=True)
    (victim / "instance.log").write_text("alice's secret line\n")
    (sqlite_server.home / "services" / "bobs").mkdir(parents=True, exist_ok=True)
    instance = str(victim) if how == "absolute" else "../alices/i-1"
    with pytest.raises(NotFoundError) as caught:
        world.bob.service_logs("bobs", instance=instance)
    assert "secret" not in str(caught.value)


# -- 2. another project's bucket answers like a missing one -----------------------------------


def test_bucket_without_access_answers_like_a_missing_one(world: World) -> None:
    world.admin.put_object("alices-data", "secret.txt", b"alice")

    def refusal(bucket: str) -> tuple[int, str, str]:
        with pytest.raises(BucketNotFoundError) as caught:
            world.bob.read_object(bucket, "secret.txt")
        error = caught.value
        return error.http_status, error.code, error.message.replace(bucket, "<b>")

    assert refusal("alices-data") == refusal("no-such-bucket")
    with pytest.raises(BucketNotFoundError) as caught:
        world.bob.list_objects("alices-data")
    assert "project_a" not in caught.value.message
    # A bucket bob can see but may not write: 403, naming the grant that would allow it.
    world.admin.grant_bucket("alices-data", "project_b", read=True, write=False)
    assert world.bob.read_object("alices-data", "secret.txt") == b"alice"
    with pytest.raises(PermissionDeniedError) as denied:
        world.bob.put_object("alices-data", "x.txt", b"x")
    assert "--project project_b --write" in denied.value.message


# -- 3. the gateway's 404 names no other service ----------------------------------------------


def test_unsigned_missing_service_lists_no_services(
    world: World, sqlite_server: LiveServer
) -> None:
    world.bob.create_service(idle_service("bobs"), project="project_b")
    world.admin.create_service(idle_service("alices_secret_service"), project="project_a")
    answer = httpx.post(f"{sqlite_server.url}/api/predict/nope", content=b"{}", trust_env=False)
    assert answer.status_code == 404
    assert "nope" in answer.text
    assert "alices_secret_service" not in answer.text
    assert "bobs" not in answer.text


# -- 4. a presigned URL dies with the key that signed it ---------------------------------------


def test_presigned_url_stops_working_when_its_key_is_revoked(world: World) -> None:
    world.bob.put_object("bobs-models", "shared.txt", b"shared")
    get_url = world.bob.sign_url("bobs-models", "shared.txt", expires_s=3600)
    put_url = world.bob.sign_url("bobs-models", "up.txt", method="PUT", expires_s=3600)
    assert httpx.get(get_url, trust_env=False).content == b"shared"
    world.admin.revoke_key(world.bob_id)
    for answer in (
        httpx.get(get_url, trust_env=False),
        httpx.put(put_url, content=b"after revoke", trust_env=False),
    ):
        assert answer.status_code == 401
        assert "revoked" in answer.json()["message"]
    assert not world.admin.list_objects("bobs-models", "up.txt").objects
    # Naming another (active) key instead does not pass the signature.
    admin_id = world.admin.whoami()["access_id"]
    forged = get_url.replace(f"access_id={world.bob_id}", f"access_id={admin_id}")
    assert httpx.get(forged, trust_env=False).status_code == 401


# -- 5. headers are authenticated before any body is read --------------------------------------


def raw_exchange(url: str, head: bytes, timeout_s: float = 10.0) -> bytes:
    """Send ``head`` (request line and headers, no body) and read what comes back until the
    server closes or ``timeout_s`` passes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(head)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


@pytest.mark.parametrize(
    "authorization",
    ["", "Authorization: LIQI1-HMAC-SHA256 LQNOBODY00000000000:00\r\n"],
    ids=["unsigned", "unknown-key"],
)
def test_a_body_is_not_awaited_before_the_headers_authenticate(
    sqlite_server: LiveServer, authorization: str
) -> None:
    date = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    head = (
        "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: 16000000\r\n{authorization}X-Liqi-Date: {date}\r\n"
        f"X-Liqi-Nonce: n1\r\nX-Liqi-Content-SHA256: {'0' * 64}\r\n\r\n"
    ).encode()
    answer = raw_exchange(sqlite_server.url, head)  # the 16 MB body is never sent
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b'"unauthenticated"' in answer


# -- 6. a body that does not arrive in time is answered 408 and the connection closed ----------


def trickle(url: str, head: bytes, first_part: bytes, wait_s: float) -> bytes:
    """Send the headers and the start of the body, then nothing: what the server answers
    within ``wait_s``, and whether it closed the connection (the answer ends)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head + first_part)
        answer = b""
        with contextlib.suppress(TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def test_control_plane_answers_408_to_a_trickled_body(tmp_path: Path) -> None:
    with live_server(tmp_path / "home", None, body_timeout_s=0.5) as server:
        access_id, secret = admin_pair(server)
        body = b'{"name": "slow_project", "description": "' + b"x" * 1000 + b'"}'
        headers = signed_headers(
            access_id=access_id, secret=secret, method="POST", path="/api/v1/projects", body=body
        )
        head = "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        answer = trickle(server.url, head.encode(), body[:100], wait_s=20)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'"request_timeout"' in answer
        assert b"connection: close" in answer.lower()
        with server.admin() as admin:
            assert "slow_project" not in [p.name for p in admin.list_projects()]


def echo_options(tmp_path: Path, limits: ServeLimits | None = None) -> ServeOptions:
    """A model server whose python processor answers the request body."""
    code = tmp_path / "echo"
    code.mkdir()
    (code / "app.py").write_text(
        "import allspark\n\n\nclass Echo(allspark.BaseProcessor):\n"
        "    def process(self, data):\n        return data, 200\n"
    )
    return ServeOptions(
        uri=str(code),
        cache_dir=tmp_path / "cache",
        name="echo",
        poll_interval_s=0,
        processor=ProcessorOptions(name="python", path=str(code), entry="app.py"),
        limits=limits or ServeLimits(),
    )


def test_model_server_answers_408_to_a_trickled_body(tmp_path: Path) -> None:
    options = echo_options(tmp_path, ServeLimits(body_timeout_s=0.5))
    with live_model_server(build_app(options)) as server:
        head = b"POST /api/predict/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
        answer = trickle(server.url, head, b"x" * 10, wait_s=20)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"did not arrive within 0.5 s" in answer
        assert b"connection: close" in answer.lower()
        with server.client() as http:  # the server keeps serving
            assert http.post("/api/predict/echo", content=b"ping").content == b"ping"


# -- 7. numbers in the service JSON are finite and in range ------------------------------------


@pytest.mark.parametrize(
    ("metadata", "field", "shown"),
    [
        ('{"memory": 1e400}', "metadata.memory", "inf"),
        ('{"memory": 1e300}', "metadata.memory", "1e+300"),
        ('{"instance": "1e400"}', "metadata.instance", "1e400"),
        ('{"cpu": "Infinity"}', "metadata.cpu", "Infinity"),
        ('{"rpc": {"keepalive": "NaN"}}', "metadata.rpc.keepalive", "NaN"),
        ('{"rpc.max_batch_timeout": "inf"}', "metadata.rpc.max_batch_timeout", "inf"),
    ],
    ids=["memory-1e400", "memory-1e300", "instance-str", "cpu-inf", "keepalive-nan", "flat-rpc"],
)
def test_non_finite_or_huge_numbers_are_a_400_naming_the_field(
    world: World, sqlite_server: LiveServer, metadata: str, field: str, shown: str
) -> None:
    body = (
        '{"name": "numbers", "model_path": "oss://bobs-models/models/", '
        f'"processor": "tensorflow_cpu", "metadata": {metadata}}}'
    ).encode()
    headers = signed_headers(
        access_id=world.bob_id,
        secret=world.bob_secret,
        method="POST",
        path="/api/v1/services",
        query="project=project_b",
        body=body,
    )
    answer = send(sqlite_server.url, "POST", "/api/v1/services", headers, body, "project=project_b")
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["message"]
    assert shown in answer.json()["message"]
    assert world.bob.list_services() == []


# -- 8. a V2 shape whose element count overflows is a 400 naming the shape ---------------------


@pytest.mark.parametrize(
    "shape",
    [[2**40, 2**40], [2**32, 2**32, 2**32], [0, 2**62], [2**63 - 1]],
    ids=["wraps-to-zero", "wraps", "zero-times-huge", "one-huge"],
)
def test_v2_shape_overflow_is_a_400_naming_the_shape(tmp_path: Path, shape: list[int]) -> None:
    from tests.serving.test_processors_live import scaled_sum_onnx

    model = tmp_path / "scaled.onnx"
    scaled_sum_onnx(model)
    options = ServeOptions(uri=str(model), cache_dir=tmp_path, poll_interval_s=0)
    with live_model_server(build_app(options)) as server, server.client() as http:
        infer = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]}
        answer = http.post("/v2/models/scaled/infer", json=infer)
        assert answer.status_code == 400, answer.text
        assert str(shape) in answer.json()["error"]
        ok = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
        assert http.post("/v2/models/scaled/infer", json=ok).json()["outputs"][0]["data"] == [6.0]


# -- 9. a deeply nested -Dcluster is a clear error naming the flag ------------------------------


def test_deeply_nested_dcluster_is_a_clear_error(sqlite_server: LiveServer) -> None:
    from tests.cli.test_cli_commands import run

    depth = 100_000
    nested = '{"worker": ' + "[" * depth + "]" * depth + "}"
    script = "-Dscript=odps://default/resources/x.py"
    result = run(sqlite_server.home, "pai", "-name", "tensorflow", script, f"-Dcluster={nested}")
    assert result.exit_code == 2, result.output
    assert "Invalid -Dcluster" in result.stderr
    assert "more than 8 levels deep" in result.stderr
    assert len(result.stderr) < 2000  # the value is shown cut short


# -- 10. an EAS-signed request is refused once its Date is stale --------------------------------


def test_stale_eas_signature_is_refused_by_the_gateway(
    world: World, sqlite_server: LiveServer
) -> None:
    created = world.bob.create_service(
        {**idle_service("signed"), "generate_token": "true"}, project="project_b"
    )
    assert created.token
    path = "/api/predict/signed"
    body = b"captured request"

    def send_signed(at: datetime) -> httpx.Response:
        date = format_datetime(at, usegmt=True)
        headers = eas_signature.sign_request(
            token=created.token or "", body=body, date=date, path=path
        )
        return httpx.post(f"{sqlite_server.url}{path}", content=body, headers=headers, timeout=30)

    now = datetime.now(timezone.utc)
    stale = send_signed(now - timedelta(days=2))  # replayed two days after it was captured
    assert stale.status_code == 401, stale.text
    assert "too far from the server's clock" in stale.text
    fresh = send_signed(now)  # passes the token check (the service runs no instance)
    assert fresh.status_code != 401, fresh.text


@pytest.mark.parametrize("sent", [b"", b"POST /api/predict/echo HTTP/1.1\r\nHost: x\r\n"])
def test_headers_that_do_not_arrive_in_time_close_the_connection(
    tmp_path: Path, sent: bytes
) -> None:
    """A connection that sends nothing, or stops in the middle of its headers (slowloris),
    is answered 408 and closed after the header timeout, on both servers."""
    options = echo_options(tmp_path)
    with (
        live_server(tmp_path / "home", None, header_timeout_s=0.5) as plane,
        live_model_server(build_app(options), header_timeout_s=0.5) as instance,
    ):
        for url in (plane.url, instance.url):
            answer = trickle(url, sent, b"", wait_s=20)
            assert answer.startswith(b"HTTP/1.1 408 "), (url, answer[:200])
            assert answer.endswith(b"The request headers did not arrive in time.")
        with instance.client() as http:  # the servers keep serving
            assert http.post("/api/predict/echo", content=b"ping").content == b"ping"
        with plane.admin() as admin:
            assert admin.whoami()["access_id"]
