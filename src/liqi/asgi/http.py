"""The ASGI plumbing of the model server: one request in, one response out.

No framework: a request is read into :class:`Request` (the body bounded by
``max_body_bytes``) and answered with a :class:`Response`. Everything protocol-specific lives
in the ``*_routes`` modules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from liqi.errors import InvalidRequestError, PayloadTooLargeError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTET = "application/octet-stream"


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


async def read_body(headers: dict[str, str], receive: Receive, max_body_bytes: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to pass ``max_body_bytes``."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequestError(f"Content-Length {declared!r} is not a number of bytes.")
        if int(declared) > max_body_bytes:
            raise _too_large(int(declared), max_body_bytes)
    chunks: list[bytes] = []
    size = 0
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
