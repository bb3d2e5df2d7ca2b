"""Authentication of control-plane requests: an ASGI middleware that checks the HMAC signature.

The whole body is read (bounded by ``max_body_bytes``) before the app sees the request, so a
request is authenticated before its body is parsed, and its hash is checked against the signed
``X-Liqi-Content-SHA256``. The principal is put in ``scope["liqi.principal"]``.

Uploads (routes matching ``streamed``) are not buffered: the headers are authenticated first,
the body is hashed as it flows to the route, and the route calls ``BodyCheck.verify`` (from
``scope["liqi.body_check"]``) before it makes the upload visible, so a changed body is refused
and leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from liqi.control.api.errors import error_response
from liqi.control.db.secretbox import SecretBox
from liqi.control.identity import accounts
from liqi.core import signing
from liqi.core.replay import NonceCache
from liqi.errors import (
    AuthenticationError,
    InvalidRequestError,
    LiqiError,
    PayloadTooLargeError,
    RequestExpiredError,
    RequestReplayedError,
    SignatureMismatchError,
)

logger = logging.getLogger(__name__)
PRINCIPAL_SCOPE_KEY = "liqi.principal"
BODY_CHECK_SCOPE_KEY = "liqi.body_check"
LAST_USED_GRANULARITY = timedelta(minutes=1)


class Authenticator:
    """Checks one request's signature against the stored key. Thread-safe."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        box: SecretBox,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._clock = clock
        self._monotonic = monotonic
        # Nonces outlive the freshness window on both sides of the clock.
        self._nonces = NonceCache(window_s=2 * signing.MAX_CLOCK_SKEW_S + 60)

    def authenticate(
        self,
        *,
        method: str,
        path: str,
        raw_query: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> accounts.Principal:
        """Check the signature; ``body`` None means the caller checks the body hash later."""
        header = headers.get("authorization")
        if not header:
            raise AuthenticationError(
                "Missing credentials: sign requests with an access key. The liqi CLI and SDK do "
                "this from your profile (see `liqi config show`)."
            )
        parsed = signing.parse_authorization(header)
        if parsed is None:
            raise AuthenticationError(
                "Malformed Authorization header: expected "
                f"'{signing.ALGORITHM} <access_id>:<signature>'."
            )
        date_text = headers.get(signing.DATE_HEADER, "")
        nonce = headers.get(signing.NONCE_HEADER, "")
        claimed_hash = headers.get(signing.CONTENT_HASH_HEADER, "").lower()
        if not nonce or not claimed_hash:
            raise AuthenticationError(
                f"Missing {signing.NONCE_HEADER} or {signing.CONTENT_HASH_HEADER} header: "
                "sign requests with the liqi SDK or follow docs/auth.md."
            )
        try:
            date = signing.parse_date(date_text)
        except ValueError:
            raise AuthenticationError(
                f"Bad or missing {signing.DATE_HEADER} header {date_text!r}: expected UTC time "
                "as YYYYMMDDTHHMMSSZ."
            ) from None
        now = self._clock()
        if not signing.is_fresh(date, now):
            raise RequestExpiredError(
                f"Request signed at {date_text} but the server's clock says "
                f"{signing.format_date(now)}; requests more than 15 minutes away are refused. "
                "Check this machine's clock and send a newly signed request."
            )
        if body is not None and hashlib.sha256(body).hexdigest() != claimed_hash:
            raise SignatureMismatchError(
                f"The body does not match its {signing.CONTENT_HASH_HEADER} header: it was "
                "changed after signing."
            )
        with self._sessions.begin() as session:
            key = accounts.find_active_key(session, parsed.access_id)
            if key is None:
                raise AuthenticationError(
                    f"Unknown or revoked access id {parsed.access_id!r}. Check access_id in your "
                    "profile (`liqi config show`) or ask an admin for a key."
                )
            text = signing.string_to_sign(
                method=method,
                path=path,
                raw_query=raw_query,
                content_sha256=claimed_hash,
                date=date_text,
                nonce=nonce,
            )
            expected = signing.signature(self._box.decrypt(key.secret_ciphertext), text)
            if not signing.signatures_match(expected, parsed.signature):
                raise SignatureMismatchError(
                    f"Signature mismatch for access id {parsed.access_id!r}: the access key "
                    "secret is wrong, or the request was changed after signing. Check "
                    "access_key in your profile (`liqi config show`)."
                )
            if not self._nonces.remember(f"{parsed.access_id}:{nonce}", self._monotonic()):
                raise RequestReplayedError(
                    "This signed request was already received once; sign each request anew."
                )
            if key.last_used_at is None or now - key.last_used_at > LAST_USED_GRANULARITY:
                key.last_used_at = now
            return accounts.load_principal(session, key)


class BodyCheck:
    """Hashes a streamed body as it passes; ``verify`` compares with the signed hash."""

    def __init__(self, claimed_sha256: str) -> None:
        self._claimed = claimed_sha256.lower()
        self._hash = hashlib.sha256()
        self.size = 0
        self.complete = False

    def update(self, chunk: bytes, more: bool) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)
        self.complete = not more

    def verify(self) -> None:
        if not self.complete:
            raise InvalidRequestError(
                f"The upload ended after {self.size} bytes, before the end of the body; "
                "nothing was stored. Send it again."
            )
        if self._hash.hexdigest() != self._claimed:
            raise SignatureMismatchError(
                f"The body does not match its {signing.CONTENT_HASH_HEADER} header: it was "
                "changed after signing; nothing was stored."
            )


class AuthMiddleware:
    """Authenticates every request whose path starts with ``prefix``."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        prefix: str,
        max_body_bytes: int,
        streamed: re.Pattern[str] | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.prefix = prefix
        self.max_body_bytes = max_body_bytes
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
            body = None if is_streamed else await self._read_body(scope, receive)
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
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
        except LiqiError as exc:
            if isinstance(exc, AuthenticationError):
                logger.info("refused %s %s: %s", scope["method"], scope["path"], exc.code)
            elif exc.http_status >= 500:
                logger.error(
                    "authentication failed on %s %s", scope["method"], scope["path"], exc_info=exc
                )
            await error_response(exc)(scope, receive, send)
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
