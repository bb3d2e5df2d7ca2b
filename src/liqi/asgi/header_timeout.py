"""A bound on the time a client may take to send a request's headers.

uvicorn has no such setting: its keep-alive timer runs only between requests and stops at the
first byte of the next one, and a new connection has no timer at all, so a client that opens
a connection and sends nothing, or sends its headers a byte at a time, holds the connection
for ever (slowloris). :func:`header_timeout_protocol` is uvicorn's httptools protocol with a
timer armed when a connection opens and when a request's first byte arrives, and stopped when
its headers are complete; when it fires the client gets ``408`` and the connection is closed.
The body has its own bound (:func:`liqi.asgi.http.body_timeout`).
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

# Time from a connection's opening, or a request's first byte, to the end of its headers.
DEFAULT_HEADER_TIMEOUT_S = 15.0
_MESSAGE = b"The request headers did not arrive in time."
_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_MESSAGE), _MESSAGE)
)


def header_timeout_protocol(timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol (pass it as ``uvicorn.Config(http=...)``) with a
    ``timeout_s`` bound on the header phase of every request."""

    class HeaderTimeoutProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            self._arm()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._expired)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _expired(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            logger.info(
                "closed a connection from %s: no request headers in %g s", self.client, timeout_s
            )
            self.transport.write(_TIMEOUT_ANSWER)
            self.transport.close()

    return HeaderTimeoutProtocol
