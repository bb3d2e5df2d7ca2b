"""Signature verification against a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests.support.servers import LiveServer
from tests.support.signed import send, signed_headers


def admin_pair(server: LiveServer) -> tuple[str, str]:
    profile = server.admin_profile().get("default")
    assert profile.access_id
    assert profile.access_key
    return profile.access_id, profile.access_key


def test_signed_request_is_accepted(server: LiveServer) -> None:
    access_id, secret = admin_pair(server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path="/api/v1/whoami"
    )
    answer = send(server.url, "GET", "/api/v1/whoami", headers)
    assert answer.status_code == 200
    assert answer.json()["access_id"] == access_id
    assert answer.json()["projects"] == {"default": "admin"}


def test_request_without_credentials_is_refused_with_code_and_message(server: LiveServer) -> None:
    answer = httpx.get(f"{server.url}/api/v1/projects", trust_env=False)
    assert answer.status_code == 401
    body = answer.json()
    assert body["code"] == "unauthenticated"
    assert "sign requests" in body["message"]


def test_health_needs_no_credentials(server: LiveServer) -> None:
    answer = httpx.get(f"{server.url}/healthz", trust_env=False)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"


@pytest.mark.parametrize(
    "header",
    ["Basic abc", "LIQI1-HMAC-SHA256", "LIQI1-HMAC-SHA256 nocolon", "LIQI1-HMAC-SHA256 :sig"],
    ids=["other-scheme", "no-credential", "no-colon", "empty-id"],
)
def test_malformed_authorization_is_refused(sqlite_server: LiveServer, header: str) -> None:
    access_id, secret = admin_pair(sqlite_server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path="/api/v1/projects"
    )
    headers["authorization"] = header
    answer = send(sqlite_server.url, "GET", "/api/v1/projects", headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthenticated"


def test_wrong_secret_is_a_signature_mismatch(server: LiveServer) -> None:
    access_id, _ = admin_pair(server)
    headers = signed_headers(
        access_id=access_id, secret="not-the-secret", method="GET", path="/api/v1/projects"
    )
    answer = send(server.url, "GET", "/api/v1/projects", headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "signature_mismatch"
    assert "not-the-secret" not in answer.text


def test_unknown_access_id_is_refused(sqlite_server: LiveServer) -> None:
    headers = signed_headers(
        access_id="LQNOBODY", secret="whatever123", method="GET", path="/api/v1/projects"
    )
    answer = send(sqlite_server.url, "GET", "/api/v1/projects", headers)
    assert answer.status_code == 401
    assert "LQNOBODY" in answer.json()["message"]


def test_tampered_body_is_refused_and_changes_nothing(server: LiveServer) -> None:
    access_id, secret = admin_pair(server)
    signed_body = b'{"name": "harmless"}'
    headers = signed_headers(
        access_id=access_id, secret=secret, method="POST", path="/api/v1/projects", body=signed_body
    )
    answer = send(server.url, "POST", "/api/v1/projects", headers, body=b'{"name": "evil"}')
    assert answer.status_code == 401
    assert answer.json()["code"] == "signature_mismatch"
    with server.admin() as admin:
        assert [p.name for p in admin.list_projects()] == ["default"]


def test_tampered_body_hash_header_is_refused(sqlite_server: LiveServer) -> None:
    access_id, secret = admin_pair(sqlite_server)
    body = b'{"name": "evil"}'
    headers = signed_headers(
        access_id=access_id, secret=secret, method="POST", path="/api/v1/projects", body=b"{}"
    )
    headers["x-liqi-content-sha256"] = __import__("hashlib").sha256(body).hexdigest()
    answer = send(sqlite_server.url, "POST", "/api/v1/projects", headers, body=body)
    assert answer.status_code == 401
    assert answer.json()["code"] == "signature_mismatch"


@pytest.mark.parametrize(
    ("signed_path", "sent_path", "signed_query", "sent_query"),
    [
        ("/api/v1/projects/default", "/api/v1/projects/other", "", ""),
        ("/api/v1/keys", "/api/v1/keys", "project=default", "project=other"),
    ],
    ids=["path", "query"],
)
def test_tampered_path_or_query_is_refused(
    sqlite_server: LiveServer, signed_path: str, sent_path: str, signed_query: str, sent_query: str
) -> None:
    access_id, secret = admin_pair(sqlite_server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path=signed_path, query=signed_query
    )
    answer = send(sqlite_server.url, "GET", sent_path, headers, query=sent_query)
    assert answer.status_code == 401
    assert answer.json()["code"] == "signature_mismatch"


@pytest.mark.parametrize(
    "offset_min", [-16, 16, -60 * 24], ids=["16min-old", "16min-ahead", "a-day-old"]
)
def test_request_outside_15_minutes_is_expired(server: LiveServer, offset_min: int) -> None:
    access_id, secret = admin_pair(server)
    when = datetime.now(timezone.utc) + timedelta(minutes=offset_min)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path="/api/v1/projects", now=when
    )
    answer = send(server.url, "GET", "/api/v1/projects", headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "request_expired"
    assert "15 minutes" in answer.json()["message"]


def test_request_inside_the_window_is_accepted(sqlite_server: LiveServer) -> None:
    access_id, secret = admin_pair(sqlite_server)
    when = datetime.now(timezone.utc) - timedelta(minutes=14)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path="/api/v1/projects", now=when
    )
    assert send(sqlite_server.url, "GET", "/api/v1/projects", headers).status_code == 200


def test_replayed_request_is_refused(server: LiveServer) -> None:
    access_id, secret = admin_pair(server)
    body = b'{"name": "once_only"}'
    headers = signed_headers(
        access_id=access_id, secret=secret, method="POST", path="/api/v1/projects", body=body
    )
    first = send(server.url, "POST", "/api/v1/projects", headers, body=body)
    assert first.status_code == 201
    with server.admin() as admin:
        admin.delete_project("once_only")
    again = send(server.url, "POST", "/api/v1/projects", headers, body=body)
    assert again.status_code == 401
    assert again.json()["code"] == "request_replayed"
    with server.admin() as admin:
        assert "once_only" not in [p.name for p in admin.list_projects()]


def test_bad_date_header_is_refused(sqlite_server: LiveServer) -> None:
    access_id, secret = admin_pair(sqlite_server)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="GET", path="/api/v1/projects"
    )
    headers["x-liqi-date"] = "yesterday"
    answer = send(sqlite_server.url, "GET", "/api/v1/projects", headers)
    assert answer.status_code == 401
    assert "x-liqi-date" in answer.json()["message"]


def test_revoked_key_is_refused(server: LiveServer) -> None:
    with server.admin() as admin:
        created = admin.create_key(project="default", role="member", name="short-lived")
        assert created.secret
        with server.client(created.access_id, created.secret) as user:
            assert [p.name for p in user.list_projects()] == ["default"]
            admin.revoke_key(created.access_id)
            answer_error = None
            try:
                user.list_projects()
            except Exception as exc:
                answer_error = exc
    assert answer_error is not None
    assert getattr(answer_error, "code", None) == "unauthenticated"


def test_oversized_body_is_refused_with_413(sqlite_server: LiveServer) -> None:
    access_id, secret = admin_pair(sqlite_server)
    body = b"x" * (sqlite_server.settings.max_body_bytes + 1)
    headers = signed_headers(
        access_id=access_id, secret=secret, method="POST", path="/api/v1/projects", body=body
    )
    answer = send(sqlite_server.url, "POST", "/api/v1/projects", headers, body=body)
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"
