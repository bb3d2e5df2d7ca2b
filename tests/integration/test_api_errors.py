"""Malformed requests get a clear 4xx with code and message, and change nothing."""

from __future__ import annotations

import pytest

from tests.integration.test_auth import admin_pair
from tests.support.servers import LiveServer
from tests.support.signed import send, signed_headers


def post(server: LiveServer, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    access_id, secret = admin_pair(server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="POST", path=path, body=body
    )
    answer = send(server.url, "POST", path, headers, body=body)
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"name": ', "malformed JSON"),
        (b'{"name": "ok_name", "colour": "red"}', "unknown field 'colour'"),
        (b"{}", "missing field 'name'"),
        (b'{"name": 42}', "name"),
        (b"[1, 2]", "Invalid request"),
        (b"\xff\xfe", "Invalid request"),
    ],
    ids=["truncated", "unknown-field", "missing-field", "wrong-type", "not-an-object", "not-utf8"],
)
def test_bad_body_is_400_and_creates_nothing(
    server: LiveServer, body: bytes, expected: str
) -> None:
    status, answer = post(server, "/api/v1/projects", body)
    assert status == 400
    assert answer["code"] == "invalid_request"
    assert expected in str(answer["message"])
    with server.admin() as admin:
        assert [p.name for p in admin.list_projects()] == ["default"]


def test_unknown_role_is_400(sqlite_server: LiveServer) -> None:
    status, answer = post(sqlite_server, "/api/v1/keys", b'{"project": "default", "role": "owner"}')
    assert status == 400
    assert "role" in str(answer["message"])


def test_unknown_endpoint_is_404_with_code(sqlite_server: LiveServer) -> None:
    access_id, secret = admin_pair(sqlite_server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path="/api/v1/nothing"
    )
    answer = send(sqlite_server.url, "GET", "/api/v1/nothing", headers)
    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"


def test_wrong_method_is_405_with_code(sqlite_server: LiveServer) -> None:
    access_id, secret = admin_pair(sqlite_server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="PATCH", path="/api/v1/projects"
    )
    answer = send(sqlite_server.url, "PATCH", "/api/v1/projects", headers)
    assert answer.status_code == 405
    assert answer.json()["code"] == "method_not_allowed"


def test_openapi_schema_is_served(sqlite_server: LiveServer) -> None:
    import httpx

    schema = httpx.get(f"{sqlite_server.url}/openapi.json", trust_env=False).json()
    assert "/api/v1/projects" in schema["paths"]
