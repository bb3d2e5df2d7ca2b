"""The gateway's HTTP/1.1 client to instances: a keep-alive pool per origin, bodies streamed.

Written on asyncio protocols with httptools' response parser (not httpx): every prediction
through the gateway pays for this hop. A request is written with one ``transport.write`` when
its body is bytes; :mod:`liqi.gateway.connection` reads the answer.

Failures are :class:`~liqi.errors.UpstreamUnavailableError`, which says whether any byte of
the request was written (``sent``: the instance may have received it) and whether trying
again may help
(``retryable``: the connection failed or closed before any byte of the answer). An idle
connection the instance closed is dropped before anything is written on it, also when the
event loop has not handled the close yet (the socket is looked at first), so that case costs
a new connection, not a failed request. A missing answer is a
:class:`~liqi.errors.DeadlineExceededError`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, Sequence

from liqi.errors import UpstreamUnavailableError
from liqi.gateway.connection import (
    Header,
    Origin,
    UpstreamConnection,
    UpstreamResponse,
)

__all__ = ["HOP_BY_HOP", "UpstreamPool", "UpstreamResponse"]

#: Headers about one hop, never forwarded (RFC 9110 7.6.1), plus the pre-RFC proxy ones.
HOP_BY_HOP = frozenset(
    b"connection keep-alive proxy-authenticate proxy-authorization proxy-connection te "
    b"trailer transfer-encoding upgrade".split()
)
_INLINE_BODY_BYTES = 64 * 2**10  # bodies up to this size are copied into the head's write


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to instances, at most ``max_connections`` per origin.

    Idle connections are reused most-recent first and dropped once idle ``idle_timeout_s``
    (below uvicorn's 5 s keep-alive, so an instance rarely closes one as it is reused) or
    as soon as their peer closes them. Make one per event loop.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_connections: int = 256,
        idle_timeout_s: float = 4.0,
        drop_headers: frozenset[bytes] = HOP_BY_HOP,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.drop_headers = drop_headers  # answer headers not handed over
        self._origins: dict[str, Origin] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        # One timer for every read timeout (a timer per request costs ~4 us): it fires at
        # the earliest deadline, fails what is overdue and sets itself for the next.
        self._sweep: asyncio.TimerHandle | None = None
        self._sweep_at = math.inf

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    def connections(self, url: str | None = None) -> tuple[int, int]:
        """(open, idle) connections to ``url``, or to every origin."""
        origins = self._origins.values() if url is None else [self._origins.get(url)]
        found = [o for o in origins if o is not None]
        return sum(len(o.conns) for o in found), sum(len(o.idle) for o in found)

    async def request(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: Sequence[Header],
        body: bytes | AsyncIterable[bytes] = b"",
        *,
        content_length: int | None = None,
        read_timeout_s: float | None = None,
        fresh: bool = False,
    ) -> UpstreamResponse:
        """Send a request and return once the answer's head has arrived.

        ``target`` is the path and query; ``headers`` are end-to-end headers without
        ``host`` or body framing (this sets ``host`` to the origin's). A body given as an
        iterable is streamed, with ``content_length`` when known, chunked otherwise.
        ``fresh`` skips idle connections. The caller reads the body and then calls
        :meth:`UpstreamResponse.close` (a no-op once the body is complete).
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        origin = self._origins.get(url) or self._add_origin(url)
        now = loop.time()
        conn = None if fresh else self._reuse(origin, now)
        if conn is None:
            conn = await self._acquire(origin, fresh)
            now = loop.time()
        transport = conn.transport
        assert transport is not None
        timeout_s = self.read_timeout_s if read_timeout_s is None else read_timeout_s
        response = conn.response = UpstreamResponse(conn, timeout_s, method == "HEAD")
        conn.timeout_s = timeout_s
        deadline = conn.deadline = now + timeout_s
        if deadline < self._sweep_at:
            self.watch(deadline)
        parts = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\nhost: ", origin.host_header]
        for name, value in headers:
            parts += (b"\r\n", name, b": ", value)
        response.sent = True  # from here on, the instance may see the request
        try:
            if isinstance(body, bytes):
                if body or method not in ("GET", "HEAD"):
                    parts.append(b"\r\ncontent-length: %d\r\n\r\n" % len(body))
                else:
                    parts.append(b"\r\n\r\n")
                if len(body) <= _INLINE_BODY_BYTES:
                    parts.append(body)
                    transport.write(b"".join(parts))
                else:
                    transport.writelines((b"".join(parts), body))
            else:
                if content_length is None:
                    parts.append(b"\r\ntransfer-encoding: chunked\r\n\r\n")
                else:
                    parts.append(b"\r\ncontent-length: %d\r\n\r\n" % content_length)
                await conn.write_stream(b"".join(parts), body, content_length)
            while not response.status:
                if response._error is not None:
                    raise response._error
                waiter = response._waiter = loop.create_future()
                await waiter
        except BaseException:
            response.close()
            raise
        return response

    def _add_origin(self, url: str) -> Origin:
        """A new origin; those left without connections (instances gone) are forgotten."""
        for old in [o for o in self._origins.values() if not (o.conns or o.pending or o.waiters)]:
            del self._origins[old.url]
        origin = self._origins[url] = Origin(url)
        return origin

    def _reuse(self, origin: Origin, now: float) -> UpstreamConnection | None:
        """The most recently used idle connection still fit for use; older ones are closed."""
        idle = origin.idle
        if idle and not self._closed:
            oldest_ok = now - self.idle_timeout_s
            while idle:
                conn = idle.pop()
                if conn.idle_since > oldest_ok and conn.reusable():
                    conn.reused = True
                    return conn
                conn.shutdown()
        return None

    async def _acquire(self, origin: Origin, fresh: bool) -> UpstreamConnection:
        while True:
            if self._closed:
                raise UpstreamUnavailableError("The gateway is shutting down.", sent=False)
            conn = None if fresh else self._reuse(origin, self.loop.time())
            if conn is not None:
                return conn
            idle = origin.idle
            if len(origin.conns) + origin.pending < self.max_connections:
                return await self._connect(origin)
            if idle:  # fresh, and the pool is full: make room
                idle[0].shutdown()
                continue
            waiter: asyncio.Future[UpstreamConnection | None] = self.loop.create_future()
            origin.waiters.append(waiter)
            try:
                given = await asyncio.wait_for(waiter, self.connect_timeout_s)
            except asyncio.TimeoutError:
                raise UpstreamUnavailableError(
                    f"All {self.max_connections} connections to {origin.url} stayed busy for "
                    f"{self.connect_timeout_s:g} s.",
                    retryable=True,
                    sent=False,
                ) from None
            except BaseException:  # cancelled: a connection handed over meanwhile goes back
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result())  # type: ignore[arg-type]
                raise
            if given is not None and given.reusable():
                given.reused = True
                return given
            if given is not None:
                given.shutdown()

    async def _connect(self, origin: Origin) -> UpstreamConnection:
        origin.pending += 1
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamConnection(self, origin), origin.host, origin.port
                ),
                self.connect_timeout_s,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            origin.pending -= 1
            origin.hand_over(None)
            reason = (
                f"no connection within {self.connect_timeout_s:g} s"
                if isinstance(exc, asyncio.TimeoutError)
                else exc.strerror or str(exc)
            )
            raise UpstreamUnavailableError(
                f"Could not connect to the instance at {origin.url}: {reason}.",
                retryable=True,
                sent=False,
            ) from None
        except BaseException:
            origin.pending -= 1
            origin.hand_over(None)
            raise
        origin.pending -= 1
        if conn.closed:  # lost between connecting and now
            origin.hand_over(None)
            raise UpstreamUnavailableError(
                f"The instance at {origin.url} closed the connection at once.",
                retryable=True,
                sent=False,
            )
        conn.adopted = True
        origin.conns.add(conn)
        return conn

    def watch(self, deadline: float) -> None:
        """Make sure the sweep runs by ``deadline``."""
        if deadline < self._sweep_at:
            if self._sweep is not None:
                self._sweep.cancel()
            self._sweep_at = deadline
            self._sweep = self.loop.call_at(deadline, self._sweep_overdue)

    def _sweep_overdue(self) -> None:
        self._sweep, self._sweep_at = None, math.inf
        now = self.loop.time()
        following = math.inf
        for origin in self._origins.values():
            for conn in list(origin.conns):
                deadline = conn.deadline
                if not deadline or conn.response is None:
                    continue
                if deadline <= now:
                    conn.timed_out()
                elif deadline < following:
                    following = deadline
        if following < math.inf:
            self.watch(following)

    def release(self, conn: UpstreamConnection) -> None:
        """Called by a connection whose answer is complete and that may be reused."""
        origin = conn._origin
        if self._closed:
            conn.shutdown()
        elif not origin.hand_over(conn):
            conn.idle_since = self.loop.time()
            origin.idle.append(conn)

    async def close(self) -> None:
        """Close every connection, busy or idle; later requests fail."""
        self._closed = True
        for origin in self._origins.values():
            for conn in list(origin.conns):
                response = conn.response
                conn.response = None
                if response is not None:
                    response._fail(UpstreamUnavailableError("The gateway is shutting down."))
                conn.shutdown()
            while origin.waiters:
                waiter = origin.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(
                        UpstreamUnavailableError("The gateway is shutting down.", sent=False)
                    )
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep, self._sweep_at = None, math.inf
        await asyncio.sleep(0)  # let the transports run their connection_lost callbacks
