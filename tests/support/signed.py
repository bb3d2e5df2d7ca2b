"""Raw signed requests, for tests that take the signature apart."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx

from liqi.core import signing


def signed_headers(
    *,
    access_id: str,
    secret: str,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    headers = signing.sign(
        access_id=access_id,
        secret=secret,
        method=method,
        path=path,
        raw_query=query,
        body=body,
        now=now or datetime.now(timezone.utc),
        nonce=nonce,
    ).as_dict()
    headers["content-type"] = "application/json"
    return headers


def send(
    url: str, method: str, path: str, headers: dict[str, str], body: bytes = b"", query: str = ""
) -> httpx.Response:
    target = f"{url}{path}" + (f"?{query}" if query else "")
    return httpx.request(method, target, headers=headers, content=body, trust_env=False, timeout=10)
