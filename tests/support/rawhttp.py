"""Requests sent with exactly the path given (no dot-segment clean-up), signed or not."""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from urllib.parse import urlsplit

from tests.support.signed import signed_headers


@dataclass(frozen=True)
class RawAnswer:
    status: int
    body: bytes


def raw_request(
    url: str,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    credentials: tuple[str, str] | None = None,
    query: str = "",
) -> RawAnswer:
    parts = urlsplit(url)
    headers: dict[str, str] = {}
    if credentials:
        headers = signed_headers(
            access_id=credentials[0],
            secret=credentials[1],
            method=method,
            path=path,
            query=query,
            body=body,
        )
    headers["content-length"] = str(len(body))
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:
        conn.request(method, path + (f"?{query}" if query else ""), body=body, headers=headers)
        answer = conn.getresponse()
        return RawAnswer(answer.status, answer.read())
    finally:
        conn.close()
