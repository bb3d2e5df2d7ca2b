"""httpx authentication that signs each request with an access key (see liqi.core.signing)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime, timezone

import httpx

from liqi.core import signing


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SigningAuth(httpx.Auth):
    """Signs requests with ``access_id``/``secret``. The secret is never sent."""

    # Bodies are read here only when the caller did not set X-Liqi-Content-SHA256 itself:
    # streamed uploads set it, so they are never held in memory.
    requires_request_body = False

    def __init__(
        self, access_id: str, secret: str, clock: Callable[[], datetime] = _utcnow
    ) -> None:
        self._access_id = access_id
        self._secret = secret
        self._clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        content_sha256 = request.headers.get(signing.CONTENT_HASH_HEADER)
        body = b"" if content_sha256 else request.read()
        headers = signing.sign(
            access_id=self._access_id,
            secret=self._secret,
            method=request.method,
            path=request.url.raw_path.decode("ascii").split("?", 1)[0],
            raw_query=request.url.query.decode("ascii"),
            body=body,
            content_sha256=content_sha256,
            now=self._clock(),
        )
        request.headers.update(headers.as_dict())
        yield request
