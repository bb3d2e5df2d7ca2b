"""Path traversal through every object route: nothing outside the bucket root is read or
written, whatever the key looks like on the wire."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.test_auth import admin_pair
from tests.support.rawhttp import raw_request
from tests.support.servers import LiveServer

EVIL_KEYS = [
    "../../secret.key",
    "../victim.txt",
    "a/../../victim.txt",
    "%2e%2e/%2e%2e/secret.key",
    "%2E%2E%2Fvictim.txt",
    "..%2f..%2fsecret.key",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "a%00b",
    "a/./b",
    "a//b",
    "..",
]


def snapshot(root: Path, bucket_root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except inside the bucket's own folder."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file() and bucket_root not in path.parents:
            found[str(path)] = path.read_bytes()
    return found


@pytest.fixture
def victim(sqlite_server: LiveServer) -> tuple[LiveServer, Path]:
    with sqlite_server.admin() as admin:
        admin.create_bucket("models", project="default")
        admin.put_object("models", "inside.txt", b"inside")
    store = sqlite_server.settings.store_dir
    (store / "victim.txt").write_text("do not touch")
    return sqlite_server, store / "models"


ROUTES = [
    ("GET", "/api/v1/buckets/models/objects/{key}", b"", ""),
    ("HEAD", "/api/v1/buckets/models/objects/{key}", b"", ""),
    ("PUT", "/api/v1/buckets/models/objects/{key}", b"pwned", ""),
    ("DELETE", "/api/v1/buckets/models/objects/{key}", b"", ""),
    ("DELETE", "/api/v1/buckets/models/objects/{key}", b"", "recursive=true"),
    ("GET", "/api/v1/buckets/models/stat/{key}", b"", ""),
    ("GET", "/api/v1/buckets/models/objects", b"", "prefix={key}"),
]


@pytest.mark.parametrize("key", EVIL_KEYS, ids=EVIL_KEYS)
@pytest.mark.parametrize(
    ("method", "path", "body", "query"), ROUTES, ids=[f"{m} {p} {q}" for m, p, _, q in ROUTES]
)
def test_evil_keys_never_leave_the_bucket(
    victim: tuple[LiveServer, Path], key: str, method: str, path: str, body: bytes, query: str
) -> None:
    server, bucket_root = victim
    before = snapshot(server.home, bucket_root)
    answer = raw_request(
        server.url,
        method,
        path.format(key=key),
        body=body,
        credentials=admin_pair(server),
        query=query.format(key=key),
    )
    assert answer.status in (400, 401, 404, 405), (answer.status, answer.body[:200])
    assert b"do not touch" not in answer.body
    after = snapshot(server.home, bucket_root)
    created = {n for n in after if n not in before and not n.endswith(("-wal", "-shm", ".log"))}
    assert not created
    for name, content in before.items():
        if not name.endswith(("-wal", "-shm", ".db", ".log")):
            assert after.get(name) == content, name
    with server.admin() as admin:
        assert admin.read_object("models", "inside.txt") == b"inside"


@pytest.mark.parametrize("key", ["../victim.txt", "a/../../victim.txt", "/etc/passwd"], ids=str)
def test_evil_keys_in_copy_and_sign_bodies(victim: tuple[LiveServer, Path], key: str) -> None:
    server, bucket_root = victim
    before = snapshot(server.home, bucket_root)
    creds = admin_pair(server)
    bodies = [
        ("/api/v1/buckets/models/copy", {"source": f"oss://models/{key}", "key": "copied"}),
        ("/api/v1/buckets/models/copy", {"source": "oss://models/inside.txt", "key": key}),
        ("/api/v1/buckets/models/sign", {"key": key}),
    ]
    for path, payload in bodies:
        answer = raw_request(
            server.url, "POST", path, body=json.dumps(payload).encode(), credentials=creds
        )
        assert answer.status == 400, (path, payload, answer.body[:200])
    assert snapshot(server.home, bucket_root).keys() >= before.keys()
    assert (server.settings.store_dir / "victim.txt").read_text() == "do not touch"


def test_presigned_routes_refuse_evil_keys(victim: tuple[LiveServer, Path]) -> None:
    server, _ = victim
    for key in ("../victim.txt", "%2e%2e/victim.txt", "a/../../victim.txt"):
        for method in ("GET", "PUT"):
            answer = raw_request(
                server.url,
                method,
                f"/presigned/models/{key}",
                query="expires=9999999999&signature=00",
            )
            assert answer.status in (400, 401, 404), (method, key, answer.status)
            assert b"do not touch" not in answer.body
    assert (server.settings.store_dir / "victim.txt").read_text() == "do not touch"
    assert not os.path.exists("/etc/pwned")
