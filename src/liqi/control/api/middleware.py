"""The control plane's authentication middleware: every ``/api/`` request is checked by the
:class:`~liqi.control.identity.auth.Authenticator` before any route runs.

What the headers alone can show is checked before any body is read (the signature headers are
there and well formed, the date is fresh, the access key is active), so nothing of a request
from a stranger is buffered. Then the whole body is read (bounded by ``max_body_bytes``, and
by ``body_timeout_s``: 408) before the app sees the request, so a request is authenticated
before its body is parsed, and its hash is checked against the signed
``X-Liqi-Content-SHA256``. The principal is put in ``scope["liqi.principal"]``.

Uploads (routes matching ``streamed``) are not buffered: the headers are authenticated first,
the body is hashed as it flows to the route, and the route calls ``BodyCheck.verify`` (from
``scope["liqi.body_check"]``) before it makes the upload visible, so a changed body is refused
and leaves nothing behind.
"""

from __future__ import annotations

import logging
import re

import anyio.to_thread
from sqlalchemy.exc import OperationalError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from liqi.asgi.http import DEFAULT_BODY_TIMEOUT_S, body_timeout
from liqi.control.api.errors import error_response
from liqi.control.db.engine import unavailable
from liqi.control.identity.auth import (
    BODY_CHECK_SCOPE_KEY,
    PRINCIPAL_SCOPE_KEY,
    Authenticator,
    BodyCheck,
)
from liqi.core import signing
from liqi.errors import AuthenticationError, LiqiError, PayloadTooLargeError

logger = logging.getLogger(__name__)


class AuthMiddleware:
    """Authenticates every request whose path starts with ``prefix``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        prefix: str,
        max_body_bytes: int,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        streamed: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.prefix = prefix
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        is_streamed = bool(
            self.streamed
            and scope["method"] in ("PUT", "POST")
            and self.streamed.match(scope["path"])
        )
        try:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            body = None
            if not is_streamed:
                if _has_body(headers):  # nothing of an unauthenticated body is buffered
                    await anyio.to_thread.run_sync(
                        lambda: self.authenticator.check_headers(headers)
                    )
                body = await self._read_body(scope, receive)
            raw_path = scope.get("raw_path") or scope["path"].encode()
            principal = await anyio.to_thread.run_sync(
                lambda: self.authenticator.authenticate(
                    method=scope["method"],
                    path=raw_path.decode("latin-1").split("?", 1)[0],
                    raw_query=scope.get("query_string", b"").decode("latin-1"),
                    headers=headers,
                    body=body,
                )
            )
        except (LiqiError, OperationalError) as exc:
            await error_response(_refusal(scope, exc))(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        if body is None:
            check = BodyCheck(headers.get(signing.CONTENT_HASH_HEADER, ""))
            scope[BODY_CHECK_SCOPE_KEY] = check

            async def hashing() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    check.update(message.get("body", b""), message.get("more_body", False))
                return message

            await self.app(scope, hashing, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:
            if (
                name.lower() == b"content-length"
                and value.isdigit()
                and int(value) > self.max_body_bytes
            ):
                raise PayloadTooLargeError(
                    f"Request body of {int(value)} bytes is over the limit of "
                    f"{self.max_body_bytes} bytes for control-plane requests."
                )
        chunks: list[bytes] = []
        size = 0
        with body_timeout(self.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise PayloadTooLargeError(
                        f"Request body is over the limit of {self.max_body_bytes} bytes for "
                        "control-plane requests."
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        return b"".join(chunks)


def _refusal(scope: Scope, exc: LiqiError | OperationalError) -> LiqiError:
    """The answer to a request that could not be authenticated, logged: a database that
    fails is a 503 ``database_unavailable``, not a 500."""
    if isinstance(exc, OperationalError):
        logger.error("database failed on %s %s: %s", scope["method"], scope["path"], exc)
        return unavailable(exc)
    if isinstance(exc, AuthenticationError):
        logger.info("refused %s %s: %s", scope["method"], scope["path"], exc.code)
    elif exc.http_status >= 500:
        logger.error("authentication failed on %s %s", scope["method"], scope["path"], exc_info=exc)
    return exc


def _has_body(headers: dict[str, str]) -> bool:
    length = headers.get("content-length", "")
    return "transfer-encoding" in headers or (length != "0" and length != "")
