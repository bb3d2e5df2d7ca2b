"""One keep-alive HTTP/1.1 connection to an instance, and the answer it carries.

The connection is an asyncio protocol feeding httptools' response parser; the pool
(:mod:`liqi.gateway.upstream`) owns connections and hands them out one exchange at a time.
An answer that arrives whole is handed over whole; a longer one part by part, with reading
paused while its consumer lags.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections import deque
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httptools

from liqi.errors import DeadlineExceededError, LiqiError, UpstreamUnavailableError

if TYPE_CHECKING:
    from liqi.gateway.upstream import UpstreamPool

Header = tuple[bytes, bytes]

HIGH_WATER_BYTES = 1 * 2**20  # pause reading an answer once this much waits for its consumer


class UpstreamResponse:
    """An instance's answer: ``status`` and ``headers`` (lower-case names, hop-by-hop ones
    removed) are set; the body arrives behind them."""

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_framed",
        "_paused",
        "_size",
        "_timeout_s",
        "_waiter",
        "head_only",
        "headers",
        "received",
        "sent",
        "sized",
        "status",
    )

    def __init__(self, conn: UpstreamConnection, timeout_s: float, head_only: bool) -> None:
        self.status = 0
        self.headers: list[Header] = []
        self.sized = False  # the instance sent Content-Length
        self._framed = False  # sized or chunked: not ended by the end of the connection
        self.received = False  # some byte of the answer arrived
        self.sent = False  # some byte of the request was written
        self.head_only = head_only
        self._conn: UpstreamConnection | None = conn  # None once the body is complete or abandoned
        self._chunks: list[bytes] = []
        self._size = 0
        self._done = False
        self._error: LiqiError | None = None
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._timeout_s = timeout_s

    @property
    def done(self) -> bool:
        """Whether the whole body has arrived (what is left of it is in :meth:`body`)."""
        return self._done

    def body(self) -> bytes:
        """The body received and not yet read: all of it once :attr:`done`."""
        chunks, self._chunks, self._size = self._chunks, [], 0
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def read(self) -> bytes:
        """The next part of the body; ``b""`` at its end.

        Raises:
            UpstreamUnavailableError: the connection broke before the body was complete.
            DeadlineExceededError: nothing arrived within the read timeout.
        """
        while True:
            if self._chunks:
                data = self.body()
                conn = self._conn
                if self._paused and conn is not None:
                    self._paused = False
                    conn.resume()
                return data
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            conn = self._conn
            assert conn is not None
            conn.arm(self._timeout_s)
            try:
                await self._wait()
            finally:
                if self._conn is not None:
                    self._conn.disarm()

    def close(self) -> None:
        """Give the answer up. A connection still carrying its body is closed."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abandon(self)
        if not self._done and self._error is None:
            self._fail(UpstreamUnavailableError("The answer was abandoned before its end."))

    # -- called by the connection --------------------------------------------------------

    async def _wait(self) -> None:
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        await waiter  # a waiter left behind is done, and ignored by _wake

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _finish(self) -> None:
        self._done = True
        self._conn = None
        self._wake()

    def _fail(self, error: LiqiError) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        self._conn = None
        self._wake()


class Origin:
    """The connections to one ``http://host:port``."""

    __slots__ = ("conns", "host", "host_header", "idle", "pending", "port", "url", "waiters")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"An upstream URL is http://<host>:<port>, not {url!r}.")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port
        self.host_header = parts.netloc.encode("ascii")
        self.conns: set[UpstreamConnection] = set()  # open connections, idle or busy
        self.idle: list[UpstreamConnection] = []  # most recently used last
        self.pending = 0  # connections being made
        self.waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()

    def hand_over(self, conn: UpstreamConnection | None) -> bool:
        """Give a connection (or, with None, a free slot) to the first waiter, if any."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def forget(self, conn: UpstreamConnection) -> None:
        self.conns.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self.hand_over(None)


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection, carrying one exchange at a time."""

    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self._pool = pool
        self._origin = origin
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.adopted = False  # counted in origin.conns
        self.reused = False
        self.idle_since = 0.0
        self.deadline = 0.0  # loop time by which the answer (or its next part) is due; 0: none
        self.timeout_s = 0.0
        self._drop = pool.drop_headers
        self._interim = False
        self._writing = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._poll: select.poll | None = None  # the socket, to look for a close not yet handled

    # -- exchanges -----------------------------------------------------------------------

    def arm(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.deadline = self._pool.loop.time() + timeout_s
        self._pool.watch(self.deadline)

    def disarm(self) -> None:
        self.deadline = 0.0

    def usable(self) -> bool:
        """Open, as far as this side knows (a closing transport refuses writes)."""
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def reusable(self) -> bool:
        """Open and idle, with nothing waiting on the socket: an idle connection that can be
        read from holds the instance's close (or bytes nobody asked for) that the event loop
        has not handled yet, and a request written on it would be lost after it was sent."""
        return self.usable() and not (self._poll is not None and self._poll.poll(0))

    def abandon(self, response: UpstreamResponse) -> None:
        if self.response is response:
            self.response = None
            self.shutdown()

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Close now, dropping anything unsent."""
        if self.closed:
            return
        self.closed = True
        self.disarm()
        if self.adopted:
            self._origin.forget(self)
        if self.transport is not None:
            self.transport.abort()

    async def write_stream(
        self, head: bytes, body: AsyncIterable[bytes], content_length: int | None
    ) -> None:
        transport = self.transport
        assert transport is not None
        self._writing = True
        sent = 0
        try:
            transport.write(head)
            async for chunk in body:
                if not self.usable():
                    return  # the instance answered early or went away: stop sending
                if not chunk:
                    continue
                sent += len(chunk)
                if content_length is None:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                if self._write_paused:
                    await self._drained()
        except BaseException:
            self.shutdown()
            raise
        finally:
            self._writing = False
        if not self.usable():
            return
        if content_length is None:
            transport.write(b"0\r\n\r\n")
        elif sent != content_length:
            self.shutdown()
            raise UpstreamUnavailableError(
                f"The request body had {sent} bytes, not the {content_length} its "
                "Content-Length announced."
            )

    async def _drained(self) -> None:
        self._drain = self._pool.loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def timed_out(self) -> None:
        response = self.response
        self.response = None
        if response is not None:
            response._fail(
                DeadlineExceededError(
                    f"The instance at {self._origin.url} sent no answer within "
                    f"{self.timeout_s:g} s."
                )
            )
        self.shutdown()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a Transport: TCP
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes on an idle connection: nothing can be trusted on it
            self.shutdown()
            return
        response.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._broken(f"sent an answer that is not valid HTTP/1.1 ({exc})")
        except httptools.HttpParserUpgrade:
            self._broken("switched protocols, which the gateway does not relay")

    def _broken(self, what: str) -> None:
        response = self.response
        self.response = None
        if response is not None:
            response._fail(UpstreamUnavailableError(f"The instance at {self._origin.url} {what}."))
        self.shutdown()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            if self.adopted:
                self._origin.forget(self)
        self.disarm()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        response = self.response
        if response is None:
            return
        self.response = None
        if response.status and not response._framed and not self._writing and exc is None:
            response._finish()  # a body delimited by the end of the connection
            return
        url, sent = self._origin.url, response.sent
        if not response.received and self.reused:
            error = UpstreamUnavailableError(
                f"The instance at {url} closed a reused connection without answering.",
                retryable=True,
                sent=sent,
                stale=True,
            )
        elif not response.received:
            error = UpstreamUnavailableError(
                f"The instance at {url} closed the connection without answering.",
                retryable=True,
                sent=sent,
            )
        else:
            error = UpstreamUnavailableError(
                f"The instance at {url} closed the connection mid-answer.", sent=sent
            )
        response._fail(error)

    # -- httptools callbacks ---------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        response = self.response
        assert response is not None
        name = name.lower()
        if name in self._drop:
            if name == b"transfer-encoding":
                response._framed = True
            return
        if name == b"content-length":
            response.sized = response._framed = True
        response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self._parser.get_status_code()
        if status < 200:  # 100 Continue and friends: the real answer follows
            self._interim = True
            response.headers.clear()
            response.sized = response._framed = False
            return
        self.deadline = 0.0
        response.status = status
        waiter = response._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if response.head_only:  # HEAD: no body follows, whatever Content-Length says
            self.response = None
            response._finish()
            self.shutdown()  # the parser expects a body; this connection cannot continue

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._chunks.append(body)
        response._size += len(body)
        if response._size > HIGH_WATER_BYTES and not response._paused:
            response._paused = True
            self.pause()
        waiter = response._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        response = self.response
        if response is None:
            return
        self.response = None
        self.deadline = 0.0
        keep = self._parser.should_keep_alive() and not self._writing
        if response._paused:
            response._paused = False
            self.resume()
        response._done = True
        response._conn = None
        waiter = response._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if keep:
            self._pool.release(self)
        else:
            self.shutdown()
