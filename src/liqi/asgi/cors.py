"""Cross-origin requests (CORS), so a page served from another origin can call a model
server or the control plane from a browser.

Off unless origins are given (``liqi serve --cors-origin``, ``liqi server start
--cors-origin``, ``LIQI_CORS_ORIGINS``). For an allowed ``Origin`` a preflight ``OPTIONS`` is
answered here (204, the methods and the asked-for headers allowed, cached for
``max_age_s``), and every other answer gets ``Access-Control-Allow-Origin`` plus the response
headers the clients read (``Retry-After``, V2's ``Inference-Header-Content-Length``), unless
the answer already has them (the gateway passing on an instance's). A
preflight from an origin that is not allowed gets 403 with a text saying which flag allows
it; other requests from it are served without CORS headers, so the browser withholds the
answer from the page (the server's behaviour for non-browser clients does not change).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from liqi.asgi.types import ASGIApp, Message, Receive, Scope, Send
from liqi.errors import ConfigError

ANY = "*"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~\-, ]*$")
METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
EXPOSED = b"Retry-After, Inference-Header-Content-Length, Content-Length, Content-Type"


@dataclass(frozen=True)
class CorsPolicy:
    """The origins allowed to call from a browser (``*``: any)."""

    origins: frozenset[str]
    max_age_s: int = 600

    @classmethod
    def parse(cls, values: Iterable[str]) -> CorsPolicy | None:
        """A policy from flag or environment values (each may hold several, comma-separated);
        None when there are none. Raises ConfigError on a value that is not an origin."""
        origins: set[str] = set()
        for value in values:
            for item in value.split(","):
                origin = item.strip().rstrip("/")
                if not origin:
                    continue
                if origin != ANY and not _ORIGIN.match(origin):
                    raise ConfigError(
                        f"CORS origin {item.strip()!r} is not an origin: give scheme, host and "
                        "port only, e.g. http://127.0.0.1:8000 (no path), or * for any origin."
                    )
                origins.add(origin.lower())
        return cls(frozenset(origins)) if origins else None

    def allows(self, origin: str) -> bool:
        return ANY in self.origins or origin.lower() in self.origins


def with_cors(app: ASGIApp, policy: CorsPolicy | None) -> ASGIApp:
    """``app`` answering preflights and adding CORS headers for ``policy``; ``app`` itself
    when there is no policy."""
    if policy is None:
        return app

    async def cors(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        origin = asked = ""
        preflight = False
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value.decode("latin-1")
            elif key == b"access-control-request-method":
                preflight = True
            elif key == b"access-control-request-headers":
                asked = value.decode("latin-1")
        if not origin:
            await app(scope, receive, send)
        elif preflight and scope["method"] == "OPTIONS":
            await _preflight(send, policy, origin, asked)
        elif policy.allows(origin):
            await app(scope, receive, _adding_headers(send, origin))
        else:
            await app(scope, receive, send)

    return cors


async def _preflight(send: Send, policy: CorsPolicy, origin: str, asked: str) -> None:
    if not policy.allows(origin):
        body = (
            f"Origin {origin} may not call this server from a browser; allow it with "
            f"--cors-origin {origin} (or LIQI_CORS_ORIGINS).\n"
        ).encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        await _answer(send, 403, headers, body)
        return
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", METHODS),
        (b"access-control-max-age", str(policy.max_age_s).encode()),
        (b"vary", b"Origin, Access-Control-Request-Headers"),
    ]
    if asked and _HEADER_LIST.match(asked):
        headers.append((b"access-control-allow-headers", asked.encode("latin-1")))
    await _answer(send, 204, headers, b"")


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _adding_headers(send: Send, origin: str) -> Send:
    added = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSED),
        (b"vary", b"Origin"),
    ]

    async def send_with_cors(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            # An answer passed through (the gateway's, from an instance that allows origins
            # too) may carry them already: browsers refuse a doubled Allow-Origin.
            if not any(k.lower() == b"access-control-allow-origin" for k, _ in headers):
                message = {**message, "headers": [*headers, *added]}
        await send(message)

    return send_with_cors
