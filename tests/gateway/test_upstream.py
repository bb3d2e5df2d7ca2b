"""UpstreamPool against real servers: uvicorn running a probe app, and raw asyncio servers
for what uvicorn never does (closing a reused connection before answering)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import select
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvloop

from liqi.errors import DeadlineExceededError, UpstreamUnavailableError
from liqi.gateway.upstream import UpstreamPool, UpstreamResponse
from tests.gateway import ProbeApp, closed_port_url, serve

pytestmark = pytest.mark.timeout(60)

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Run a coroutine on the standard event loop and on uvloop (what the server uses)."""
    if request.param == "uvloop":
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


@pytest.fixture(scope="module")
def probe() -> Iterator[str]:
    with serve(ProbeApp()) as url:
        yield url


@pytest.fixture(scope="module")
def short_keep_alive() -> Iterator[str]:
    """A probe whose server closes connections idle for 0.2 s."""
    with serve(ProbeApp(), timeout_keep_alive=0.2) as url:
        yield url


@asynccontextmanager
async def opened(**options: Any) -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(**options)
    try:
        yield pool
    finally:
        await pool.close()


async def read_all(response: UpstreamResponse) -> bytes:
    if response.done:
        return response.body()
    parts = []
    while chunk := await response.read():
        parts.append(chunk)
    return b"".join(parts)


async def get(pool: UpstreamPool, url: str, target: bytes, **kwargs: Any) -> tuple[int, bytes]:
    response = await pool.request(url, "GET", target, [], **kwargs)
    try:
        return response.status, await read_all(response)
    finally:
        response.close()


def test_content_length_answer_arrives_whole(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            response = await pool.request(probe, "GET", b"/fixed?size=1000", [(b"x-a", b"1")])
            assert response.status == 200
            assert response.done
            assert dict(response.headers)[b"content-length"] == b"1000"
            assert dict(response.headers)[b"x-upstream"] == b"probe"
            assert b"date" in dict(response.headers)  # only hop-by-hop ones are dropped by default
            assert response.body() == b"x" * 1000

    run(main())


def test_chunked_answer_streams_in_parts(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            response = await pool.request(probe, "GET", b"/chunked?parts=20&size=1000", [])
            names = [name for name, _ in response.headers]
            assert b"transfer-encoding" not in names
            assert b"content-length" not in names
            assert not response.sized
            body = await read_all(response)
            assert body == b"".join(bytes([ord("a") + i]) * 1000 for i in range(20))
            assert pool.connections(probe) == (1, 1)  # complete: back in the pool

    run(main())


def test_keep_alive_reuses_one_connection(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            ports = {(await get(pool, probe, b"/peer"))[1] for _ in range(50)}
            assert len(ports) == 1
            assert pool.connections(probe) == (1, 1)
            # Concurrent requests open more connections, which are then reused.
            answers = await asyncio.gather(
                *(get(pool, probe, b"/slow?delay=0.05") for _ in range(8))
            )
            assert [a for a in answers if a != (200, b"slow")] == []
            assert pool.connections(probe) == (8, 8)
            await pool.close()
            assert pool.connections(probe) == (0, 0)

    run(main())


def test_pool_size_is_bounded(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened(max_connections=2) as pool:
            answers = await asyncio.gather(*(get(pool, probe, b"/peer") for _ in range(20)))
            assert {status for status, _ in answers} == {200}
            assert len({port for _, port in answers}) <= 2
            assert pool.connections(probe)[0] <= 2

    run(main())


def test_idle_connection_closed_by_peer_is_dropped(run: Runner, short_keep_alive: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            _, first = await get(pool, short_keep_alive, b"/peer")
            assert pool.connections(short_keep_alive) == (1, 1)
            deadline = asyncio.get_running_loop().time() + 10
            while pool.connections(short_keep_alive) != (0, 0):  # the server closes it at 0.2 s
                assert asyncio.get_running_loop().time() < deadline, "idle close not noticed"
                await asyncio.sleep(0.01)
            status, second = await get(pool, short_keep_alive, b"/peer")
            assert status == 200
            assert second != first

    run(main())


def test_idle_timeout_drops_old_connections(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened(idle_timeout_s=0.0) as pool:
            _, first = await get(pool, probe, b"/peer")
            _, second = await get(pool, probe, b"/peer")
            assert first != second
            assert pool.connections(probe)[0] == 1

    run(main())


def test_read_timeout(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened(read_timeout_s=0.1) as pool:
            with pytest.raises(DeadlineExceededError, match=r"no answer within 0\.1 s"):
                await pool.request(probe, "GET", b"/slow?delay=3", [])
            assert pool.connections(probe) == (0, 0)  # a timed-out connection is not reused
            # The per-request timeout wins over the pool's.
            assert await get(pool, probe, b"/slow?delay=0.3", read_timeout_s=5) == (200, b"slow")

    run(main())


def test_read_timeout_between_body_parts(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened(read_timeout_s=0.2) as pool:
            response = await pool.request(probe, "GET", b"/drip", [])
            assert response.status == 200
            assert await response.read() == b"first"
            with pytest.raises(DeadlineExceededError):
                await response.read()
            response.close()
            assert pool.connections(probe) == (0, 0)

    run(main())


def test_connection_refused_is_retryable(run: Runner) -> None:
    async def main() -> None:
        async with opened() as pool:
            url = closed_port_url()
            with pytest.raises(UpstreamUnavailableError, match="Could not connect") as caught:
                await pool.request(url, "GET", b"/", [])
            assert caught.value.retryable
            assert not caught.value.sent
            assert not caught.value.stale
            assert pool.connections(url) == (0, 0)

    run(main())


def test_request_bodies_bytes_sized_and_chunked(run: Runner, probe: str) -> None:
    async def chunks(n: int, size: int) -> AsyncIterator[bytes]:
        for i in range(n):
            yield bytes([i % 256]) * size

    async def main() -> None:
        async with opened() as pool:
            big = bytes(range(256)) * 40_000  # 10 MB
            expected = {
                "bytes": big,
                "sized": b"".join(bytes([i]) * 100_000 for i in range(30)),
                "chunked": b"".join(bytes([i]) * 100_000 for i in range(30)),
            }
            bodies: dict[str, Any] = {
                "bytes": big,
                "sized": chunks(30, 100_000),
                "chunked": chunks(30, 100_000),
            }
            for kind, body in bodies.items():
                length = 3_000_000 if kind == "sized" else None
                response = await pool.request(
                    probe, "POST", b"/echo", [], body, content_length=length
                )
                data = await read_all(response)
                headers = dict(response.headers)
                assert data == expected[kind], kind
                assert headers[b"x-body-md5"] == hashlib.md5(expected[kind]).hexdigest().encode()
                assert headers[b"x-request-te"] == (b"chunked" if kind == "chunked" else b"")
                if kind != "chunked":
                    assert headers[b"x-request-length"] == str(len(expected[kind])).encode()
            assert pool.connections(probe) == (1, 1)

    run(main())


def test_large_answer_is_read_with_backpressure(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            response = await pool.request(probe, "GET", b"/fixed?size=20000000", [])
            total = 0
            while chunk := await response.read():
                total += len(chunk)
                await asyncio.sleep(0)  # a consumer that yields between reads
            assert total == 20_000_000
            assert pool.connections(probe) == (1, 1)

    run(main())


def test_head_request_and_reuse_after_it(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            response = await pool.request(probe, "HEAD", b"/fixed?size=5", [])
            assert response.status == 200
            assert response.done
            assert response.body() == b""
            assert await get(pool, probe, b"/fixed?size=3") == (200, b"xxx")

    run(main())


def test_error_status_is_an_answer(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            assert await get(pool, probe, b"/status?code=418") == (418, b"custom error")

    run(main())


def test_abandoned_answer_closes_its_connection(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            response = await pool.request(probe, "GET", b"/drip", [])
            assert await response.read() == b"first"
            response.close()
            assert pool.connections(probe) == (0, 0)
            with pytest.raises(UpstreamUnavailableError, match="abandoned"):
                await response.read()

    run(main())


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    """A bare TCP server running ``handler`` per connection; on exit it waits for every
    handler and closes every connection, so no socket outlives the event loop."""
    tasks: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
        if tasks:
            await asyncio.wait(tasks, timeout=10)


async def read_head(reader: asyncio.StreamReader) -> bool:
    try:
        await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    return True


def test_reused_connection_closed_after_the_request_is_stale_and_sent(run: Runner) -> None:
    """The instance reads the request written on a reused connection, then closes it without
    answering: the request reached it (``sent``), though a fresh connection may work."""

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_head(reader):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
            await read_head(reader)  # the next request: read, and dropped unanswered

    async def main() -> None:
        async with raw_server(answer_once) as url, opened() as pool:
            assert await get(pool, url, b"/") == (200, b"ok")
            with pytest.raises(
                UpstreamUnavailableError, match="reused connection without"
            ) as caught:
                await get(pool, url, b"/")
            assert caught.value.retryable
            assert caught.value.sent
            assert caught.value.stale
            assert await get(pool, url, b"/", fresh=True) == (200, b"ok")

    run(main())


def test_new_connection_closed_after_the_request_is_sent(run: Runner) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)

    async def main() -> None:
        async with raw_server(drop) as url, opened() as pool:
            with pytest.raises(UpstreamUnavailableError, match="without answering") as caught:
                await get(pool, url, b"/")
            assert caught.value.retryable
            assert caught.value.sent
            assert not caught.value.stale

    run(main())


@contextlib.contextmanager
def closing_server() -> Iterator[tuple[str, threading.Event, threading.Event, list[bytes]]]:
    """A blocking server on a thread (so it runs while the test's event loop is held): per
    connection, it answers one request, waits for ``close`` and closes the connection, then
    sets ``closed``. The request heads it read are in the list."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    close, closed, stop = threading.Event(), threading.Event(), threading.Event()
    heads: list[bytes] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(10)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(4096)
                heads.append(head)
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                close.wait(10)
            closed.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", close, closed, heads
    finally:
        stop.set()
        close.set()
        thread.join(10)
        listener.close()


def test_idle_connection_closed_unnoticed_is_not_written_on(run: Runner) -> None:
    """The instance closed an idle connection and the event loop has not run since, so it
    has not seen the close: the pool finds it on the socket, writes nothing on that
    connection and sends the request on a new one."""

    async def main() -> None:
        with closing_server() as (url, close, closed, heads):
            async with opened() as pool:
                assert await get(pool, url, b"/first") == (200, b"ok")
                assert pool.connections(url) == (1, 1)
                # Hold the event loop (no await) until the close reached this side's socket.
                close.set()
                assert closed.wait(10)
                sock = pool._origins[url].idle[0].transport.get_extra_info("socket")
                assert select.select([sock.fileno()], [], [], 10)[0], "the close never arrived"
                assert pool.connections(url) == (1, 1)  # not handled by the loop yet
                assert await get(pool, url, b"/second") == (200, b"ok")
        assert [head.split(b" ")[1] for head in heads] == [b"/first", b"/second"]

    run(main())


def test_broken_off_answer_and_invalid_http(run: Runner) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
        await writer.drain()

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client gives up on us

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    async def main() -> None:
        async with opened() as pool:
            async with raw_server(half) as url:
                response = await pool.request(url, "GET", b"/", [])
                with pytest.raises(UpstreamUnavailableError, match="mid-answer") as caught:
                    await read_all(response)
                assert not caught.value.retryable
            async with raw_server(garbage) as url:
                with pytest.raises(UpstreamUnavailableError, match="not valid HTTP"):
                    await pool.request(url, "GET", b"/", [])
                assert pool.connections(url) == (0, 0)
            async with raw_server(until_close) as url:
                assert await get(pool, url, b"/") == (200, b"all of it")

    run(main())


def test_closed_pool_refuses_requests(run: Runner, probe: str) -> None:
    async def main() -> None:
        async with opened() as pool:
            await get(pool, probe, b"/peer")
            await pool.close()
            assert pool.connections(probe) == (0, 0)
            with pytest.raises(UpstreamUnavailableError, match="shutting down"):
                await pool.request(probe, "GET", b"/peer", [])

    run(main())
