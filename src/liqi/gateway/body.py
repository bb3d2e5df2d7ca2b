"""The body of a request passing through the gateway: read whole when it is small (so a
request whose instance vanished can be sent again to another one), else streamed on; bounded
by the route's max_body_bytes either way."""

from __future__ import annotations

from collections.abc import AsyncIterator

from liqi.asgi.types import Message, Receive
from liqi.errors import InvalidRequestError, PayloadTooLargeError


class ClientGoneError(Exception):
    """The client went away before its request was relayed."""


class RequestBody:
    """The request body: read whole when small (so it can be sent again), else streamed."""

    def __init__(
        self, receive: Receive, max_bytes: int, keep_bytes: int, declared: bytes | None
    ) -> None:
        self.receive = receive
        self.max_bytes = max_bytes
        self.keep_bytes = keep_bytes
        self.length: int | None = None
        if declared is not None:
            if not declared.isdigit():
                raise InvalidRequestError(f"Content-Length {declared!r} is not a number of bytes.")
            self.length = int(declared)
            if self.length > max_bytes:
                raise self._too_large(self.length)
        self.started = False  # the first part was read
        self.data: bytes | None = None  # the whole body, once read
        self.first = b""  # the first part, when streamed
        self.finished = False  # everything was taken from the client
        self.touched = False  # parts after the first were taken (so it cannot be replayed)

    @property
    def replayable(self) -> bool:
        return self.data is not None or not self.touched

    async def start(self) -> None:
        """Read the first part; all of it when it ends there or is small."""
        if not self.started:
            self.started = True
            message = await self.receive()
            self.first = self._part(message, 0)
            if not message.get("more_body", False):
                self.data, self.finished = self.first, True
                return
        if self.data is None and self.length is not None and self.length <= self.keep_bytes:
            await self.whole()

    async def whole(self) -> bytes:
        """The whole body (bounded by the route's max_body_bytes)."""
        if not self.started:
            await self.start()
        if self.data is None:
            chunks = [self.first]
            async for chunk in self._rest(len(self.first)):
                chunks.append(chunk)
            self.data = b"".join(chunks)
            self.length = len(self.data)
        return self.data

    def content(self) -> bytes | AsyncIterator[bytes]:
        return self.data if self.data is not None else self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        yield self.first
        async for chunk in self._rest(len(self.first)):
            yield chunk

    async def _rest(self, size: int) -> AsyncIterator[bytes]:
        self.touched = True
        while not self.finished:
            message = await self.receive()
            chunk = self._part(message, size)
            size += len(chunk)
            self.finished = not message.get("more_body", False)
            yield chunk

    def _part(self, message: Message, size: int) -> bytes:
        if message["type"] == "http.disconnect":
            raise ClientGoneError
        chunk: bytes = message.get("body", b"")
        if size + len(chunk) > self.max_bytes:
            raise self._too_large(size + len(chunk))
        return chunk

    def _too_large(self, size: int) -> PayloadTooLargeError:
        limit = self.max_bytes
        return PayloadTooLargeError(
            f"The request body has {size} bytes or more; this service takes at most {limit} "
            f"bytes ({limit / 2**20:g} MiB). Send fewer rows per request."
        )
