"""One request in, one response out, without a framework: a request read into
:class:`Request` (the body bounded by ``max_body_bytes``), answered with a :class:`Response`,
and the one way both servers answer an error (:func:`error_response`). Everything
protocol-specific lives in the model server's ``*_routes`` modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio

from liqi.asgi.tokens import WWW_AUTHENTICATE
from liqi.asgi.types import Receive, Scope, Send
from liqi.errors import (
    AuthenticationError,
    InvalidRequestError,
    LiqiError,
    PayloadTooLargeError,
    RequestTimeoutError,
)
from liqi.protocols.tensors import encode_error

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTET = "application/octet-stream"
# How long a client has to send a request's whole body once its headers are in.
DEFAULT_BODY_TIMEOUT_S = 60.0
# The header that makes uvicorn close the connection after the answer: a 408 leaves the rest
# of the body unread on the socket.
CLOSE = (b"connection", b"close")


@dataclass(frozen=True, eq=False)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


@dataclass(eq=False)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    model: str = ""  # for metrics: the model and version that answered, if any
    version: str = ""


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def read_body(
    headers: dict[str, str],
    receive: Receive,
    max_body_bytes: int,
    timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass ``max_body_bytes``,
    and with 408 (:func:`body_timeout`) when it has not all come in ``timeout_s``."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError(f"Content-Length {declared!r} is not a number of bytes.")
        if int(declared) > max_body_bytes:
            raise _too_large(int(declared), max_body_bytes)
    chunks: list[bytes] = []
    size = 0
    with body_timeout(timeout_s):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionAbortedError("the client went away")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > max_body_bytes:
                    raise _too_large(size, max_body_bytes)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@contextmanager
def body_timeout(timeout_s: float) -> Iterator[None]:
    """Bound the time to receive a body: a client that sends its headers and then trickles
    (or holds) the body gets 408 :class:`RequestTimeoutError` after ``timeout_s``; the
    answer closes the connection (:data:`CLOSE`)."""
    try:
        with anyio.fail_after(timeout_s):
            yield
    except TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {timeout_s:g} s; send it again over a "
            "faster connection, or in smaller pieces."
        ) from None


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body has {size} bytes or more; this server takes at most {limit} "
        f"bytes ({limit / 2**20:.0f} MiB). Send fewer rows per request, or start the server "
        "with a larger --max-body-mb."
    )


async def send_response(send: Send, response: Response) -> None:
    headers = [
        (b"content-type", response.content_type.encode("latin-1")),
        (b"content-length", str(len(response.body)).encode("latin-1")),
        *response.headers,
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def error_response(exc: LiqiError, *, json: bool) -> Response:
    """The answer to an error: ``{"error": message}`` (TF Serving, V2) or the message as text
    (EAS), with ``Retry-After`` on a 503 and ``WWW-Authenticate`` on a 401."""
    headers = [(b"retry-after", b"1")] if exc.http_status == 503 else []
    if isinstance(exc, RequestTimeoutError):
        headers.append(CLOSE)
    if isinstance(exc, AuthenticationError):
        headers.append(WWW_AUTHENTICATE)
    if json:
        return Response(exc.http_status, encode_error(exc.message), JSON, headers)
    return Response(exc.http_status, exc.message.encode(), TEXT, headers)
