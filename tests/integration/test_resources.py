"""Resources (`add file`) against a real server, on SQLite and PostgreSQL: the SDK, and raw
signed requests where the point is the wire (declared sizes, streamed bodies, bad names)."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from liqi.client import Client
from liqi.core import odps
from liqi.errors import (
    AlreadyExistsError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ProjectNotFoundError,
    SignatureMismatchError,
)
from tests.support.servers import LiveServer
from tests.support.signed import signed_headers


@dataclass
class World:
    admin: Client
    alice: Client  # member of proj_a
    bob: Client  # member of proj_b
    credentials: tuple[str, str]  # the admin's access id and secret


@pytest.fixture
def world(server: LiveServer) -> Iterator[World]:
    yield from _world(server)


@pytest.fixture
def sqlite_world(sqlite_server: LiveServer) -> Iterator[World]:
    yield from _world(sqlite_server)


def _world(server: LiveServer) -> Iterator[World]:
    profile = server.admin_profile().get("default")
    assert profile.access_id
    assert profile.access_key
    with server.admin() as admin:
        admin.create_project("proj_a")
        admin.create_project("proj_b")
        a = admin.create_key(project="proj_a", role="member")
        b = admin.create_key(project="proj_b", role="member")
        assert a.secret
        assert b.secret
        with (
            server.client(a.access_id, a.secret) as alice,
            server.client(b.access_id, b.secret) as bob,
        ):
            yield World(admin, alice, bob, (profile.access_id, profile.access_key))


def stored_files(server: LiveServer) -> list[Path]:
    """Every file under the server's store folder (resources, volumes, temporary files)."""
    return sorted(p for p in server.settings.store_dir.rglob("*") if p.is_file())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_add_list_describe_get_drop(world: World, server: LiveServer, tmp_path: Path) -> None:
    data = b"import tensorflow as tf\nprint('mnist')\n" * 100
    script = write(tmp_path / "mnist_softmax.py", data)
    added = world.alice.add_resource(script, comment="the seed's script", project="proj_a")
    assert added.uri == "odps://proj_a/resources/mnist_softmax.py"
    assert (added.kind, added.size) == ("py", len(data))
    assert added.sha256 == hashlib.sha256(data).hexdigest()
    assert [r.name for r in world.alice.list_resources("proj_a")] == ["mnist_softmax.py"]
    described = world.alice.describe_resource("mnist_softmax.py", project="proj_a")
    assert described == added
    out = world.alice.get_resource("mnist_softmax.py", tmp_path / "out", project="proj_a")
    assert out.read_bytes() == data
    world.alice.drop_resource("mnist_softmax.py", project="proj_a")
    assert world.alice.list_resources("proj_a") == []
    with pytest.raises(NotFoundError) as caught:
        world.alice.describe_resource("mnist_softmax.py", project="proj_a")
    assert "liqi resource list --project proj_a" in caught.value.message
    assert stored_files(server) == []


def test_profile_project_is_the_default(sqlite_world: World, tmp_path: Path) -> None:
    script = write(tmp_path / "train.py", b"print(1)\n")
    added = sqlite_world.admin.add_resource(script)
    assert added.uri == "odps://default/resources/train.py"
    assert [r.uri for r in sqlite_world.admin.list_resources()] == [added.uri]


def test_duplicate_is_refused_without_force_and_replaced_with_it(
    world: World, tmp_path: Path
) -> None:
    first = write(tmp_path / "one" / "job.py", b"version = 1\n")
    second = write(tmp_path / "two" / "job.py", b"version = 2, longer\n")
    made = world.alice.add_resource(first, project="proj_a")
    with pytest.raises(AlreadyExistsError) as caught:
        world.alice.add_resource(second, project="proj_a")
    assert caught.value.http_status == 409
    assert "-f" in caught.value.message
    assert "job.py" in caught.value.message
    kept = world.alice.get_resource("job.py", tmp_path / "kept.py", project="proj_a")
    assert kept.read_bytes() == b"version = 1\n"
    replaced = world.alice.add_resource(second, force=True, comment="v2", project="proj_a")
    assert replaced.size == len(b"version = 2, longer\n")
    assert replaced.comment == "v2"
    assert replaced.created_at == made.created_at
    assert replaced.updated_at > made.updated_at
    got = world.alice.get_resource("job.py", tmp_path / "got.py", project="proj_a")
    assert got.read_bytes() == b"version = 2, longer\n"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("train.py", "py"),
        ("udf.jar", "jar"),
        ("data.tar.gz", "archive"),
        ("data.TGZ", "archive"),
        ("code.zip", "archive"),
        ("notes.txt", "file"),
        ("README", "file"),
    ],
)
def test_kind_is_inferred_from_the_name(
    sqlite_world: World, tmp_path: Path, name: str, kind: str
) -> None:
    path = write(tmp_path / name, b"content")
    assert sqlite_world.admin.add_resource(path).kind == kind


def test_kind_override(sqlite_world: World, tmp_path: Path) -> None:
    script = write(tmp_path / "train.py", b"print(1)\n")
    assert sqlite_world.admin.add_resource(script, kind="file").kind == "file"
    text = write(tmp_path / "notes.txt", b"x")
    with pytest.raises(InvalidRequestError) as caught:
        sqlite_world.admin.add_resource(text, kind="archive")
    assert ".tar.gz" in caught.value.message
    # The server checks too, whatever the client sends.
    path = "/api/v1/projects/default/resources/notes.txt"
    answer = signed_put(
        sqlite_world.admin.endpoint, sqlite_world.credentials, path, b"x", "kind=jar"
    )
    assert answer.status_code == 400
    assert "must end with .jar" in answer.json()["message"]
    assert [r.name for r in sqlite_world.admin.list_resources()] == ["train.py"]


@dataclass(frozen=True)
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def signed_put(
    url: str, credentials: tuple[str, str], path: str, body: bytes, query: str = ""
) -> Answer:
    """A signed PUT sent with exactly ``path`` (httpx would resolve dot segments)."""
    headers = signed_headers(
        access_id=credentials[0],
        secret=credentials[1],
        method="PUT",
        path=path,
        query=query,
        body=body,
    )
    headers["content-type"] = "application/octet-stream"
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request("PUT", path + (f"?{query}" if query else ""), body=body, headers=headers)
        answer = conn.getresponse()
        return Answer(answer.status, answer.read().decode())
    finally:
        conn.close()


def raw_exchange(url: str, head: str, body: bytes) -> bytes:
    """Send ``head`` and ``body`` over a plain socket and return what the server answered."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1") + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_declared_size_over_2_gib_is_refused_before_the_body(
    world: World, server: LiveServer
) -> None:
    path = "/api/v1/projects/default/resources/huge.bin"
    headers = signed_headers(
        access_id=world.credentials[0],
        secret=world.credentials[1],
        method="PUT",
        path=path,
        body=b"not the real body",
    )
    claimed = odps.MAX_RESOURCE_BYTES + 1
    lines = [f"PUT {path} HTTP/1.1", f"Host: {urlsplit(server.url).netloc}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "content-type"]
    lines += ["Content-Type: application/octet-stream", f"Content-Length: {claimed}"]
    answer = raw_exchange(server.url, "\r\n".join(lines) + "\r\n\r\n", b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"code":"payload_too_large"' in answer
    assert str(claimed).encode() in answer
    assert b"2 GiB" in answer
    assert world.admin.list_resources() == []
    assert stored_files(server) == []


def test_streamed_body_over_the_limit_is_stopped(
    sqlite_world: World, sqlite_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body without Content-Length (chunked) is counted as it arrives."""
    monkeypatch.setattr(odps, "MAX_RESOURCE_BYTES", 10_000)
    body = bytes(range(256)) * 100  # 25,600 bytes
    path = "/api/v1/projects/default/resources/big.bin"
    headers = signed_headers(
        access_id=sqlite_world.credentials[0],
        secret=sqlite_world.credentials[1],
        method="PUT",
        path=path,
        body=body,
    )
    headers["content-type"] = "application/octet-stream"

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    answer = httpx.put(
        f"{sqlite_server.url}{path}", headers=headers, content=chunks(), trust_env=False
    )
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
    assert sqlite_world.admin.list_resources() == []
    assert stored_files(sqlite_server) == []
    # Under the limit the same route stores it.
    small = body[:5000]
    ok = signed_put(sqlite_server.url, sqlite_world.credentials, path, small)
    assert ok.status_code == 200, ok.text
    assert sqlite_world.admin.describe_resource("big.bin").size == 5000


def test_sdk_refuses_a_file_over_the_limit_before_sending(
    sqlite_world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(odps, "MAX_RESOURCE_BYTES", 100)
    big = write(tmp_path / "big.bin", b"x" * 101)
    with pytest.raises(PayloadTooLargeError) as caught:
        sqlite_world.admin.add_resource(big)
    assert "big.bin" in caught.value.message
    assert sqlite_world.admin.list_resources() == []


def test_changed_body_is_refused_and_nothing_is_stored(
    sqlite_world: World, sqlite_server: LiveServer
) -> None:
    path = "/api/v1/projects/default/resources/job.py"
    headers = signed_headers(
        access_id=sqlite_world.credentials[0],
        secret=sqlite_world.credentials[1],
        method="PUT",
        path=path,
        body=b"print('signed')\n",
    )
    answer = httpx.put(
        f"{sqlite_server.url}{path}", headers=headers, content=b"print('evil')\n", trust_env=False
    )
    assert answer.status_code == 401
    assert answer.json()["code"] == SignatureMismatchError.code
    assert sqlite_world.admin.list_resources() == []
    assert stored_files(sqlite_server) == []


@pytest.mark.parametrize(
    "raw_name",
    ["..%2Fx", "a%2F..%2F..%2Fb", "%2Fetc%2Fpasswd", "..", "a%5Cb", "x%00y", "..hidden"],
)
def test_bad_names_are_refused_on_the_wire(
    sqlite_world: World, sqlite_server: LiveServer, tmp_path: Path, raw_name: str
) -> None:
    path = f"/api/v1/projects/default/resources/{raw_name}"
    answer = signed_put(sqlite_server.url, sqlite_world.credentials, path, b"payload")
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "invalid_request"
    assert "Invalid resource name" in answer.json()["message"]
    assert stored_files(sqlite_server) == []
    assert [p for p in tmp_path.rglob("*") if p.name in ("x", "b", "passwd", "y")] == []
    assert sqlite_world.admin.list_resources() == []


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/passwd", "a b", "x" * 257])
def test_bad_names_are_refused_by_the_sdk(sqlite_world: World, tmp_path: Path, name: str) -> None:
    path = write(tmp_path / "f.txt", b"payload")
    with pytest.raises(InvalidRequestError) as caught:
        sqlite_world.admin.add_resource(path, name=name)
    assert "Invalid resource name" in caught.value.message


def test_other_projects_resources_are_404(world: World, server: LiveServer, tmp_path: Path) -> None:
    script = write(tmp_path / "secret.py", b"password = 1\n")
    world.alice.add_resource(script, project="proj_a")
    actions = [
        lambda: world.bob.list_resources("proj_a"),
        lambda: world.bob.describe_resource("secret.py", project="proj_a"),
        lambda: world.bob.get_resource("secret.py", tmp_path / "stolen", project="proj_a"),
        lambda: world.bob.drop_resource("secret.py", project="proj_a"),
        lambda: world.bob.add_resource(script, force=True, project="proj_a"),
    ]
    for action in actions:
        with pytest.raises(ProjectNotFoundError) as caught:
            action()
        assert caught.value.http_status == 404
    assert not (tmp_path / "stolen").exists()
    assert [r.name for r in world.alice.list_resources("proj_a")] == ["secret.py"]
    # A member adds and drops in its own project.
    mine = world.bob.add_resource(script, project="proj_b")
    assert mine.uri == "odps://proj_b/resources/secret.py"
    world.bob.drop_resource("secret.py", project="proj_b")
    assert world.bob.list_resources("proj_b") == []
