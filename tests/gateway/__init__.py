"""Gateway tests: real uvicorn servers in threads (port 0) and a small upstream app."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn

Scope = dict[str, Any]
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it is true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s:g} s: {what or check}")
        time.sleep(0.005)


@contextmanager
def serve(app: Any, *, lifespan: str = "off", **options: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn (uvloop, httptools) in a thread on 127.0.0.1 port 0."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan=lifespan,
        proxy_headers=False,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 30, "uvicorn started")
        assert thread.is_alive(), "uvicorn exited at start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def closed_port_url() -> str:
    """The URL of a port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class ProbeApp:
    """An upstream whose answers show what it received. The last path segment picks:

    echo (the body back, with its size and framing in headers), headers (JSON of the
    request), peer (the client's port), fixed?size=, chunked?parts=&size=, slow?delay=,
    drip (one chunk, then waits for the client to leave), status?code=, hold (waits for
    :attr:`gate`). Every answer carries ``x-upstream: <name>``; :attr:`seen` counts the
    requests per action.
    """

    def __init__(self, name: str = "probe") -> None:
        self.name = name
        self.gate = threading.Event()
        self.held = 0  # requests waiting at the gate
        self.disconnects = 0  # drip requests whose client left
        self.seen: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        action = scope["path"].rsplit("/", 1)[-1]
        self.seen[action] += 1
        query = dict(parse_qsl(scope["query_string"].decode()))
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if action == "chunked":
            await self._chunked(send, int(query.get("parts", "3")), int(query.get("size", "5")))
            return
        if action == "drip":
            await self._drip(send, receive)
            return
        handler = getattr(self, f"_{action}", None)
        if handler is None:
            status, answer, extra = 404, b"no such probe action", []
        else:
            status, answer, extra = await handler(scope, query, body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", b"%d" % len(answer)),
                    (b"x-upstream", self.name.encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    async def _echo(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        headers = dict(scope["headers"])
        return (
            200,
            body,
            [
                (b"x-body-md5", hashlib.md5(body).hexdigest().encode()),
                (b"x-request-length", headers.get(b"content-length", b"")),
                (b"x-request-te", headers.get(b"transfer-encoding", b"")),
            ],
        )

    async def _headers(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        seen = {
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "method": scope["method"],
        }
        return 200, orjson.dumps(seen), []

    async def _peer(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        return 200, str(scope["client"][1]).encode(), []

    async def _fixed(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        return 200, b"x" * int(query.get("size", "10")), []

    async def _slow(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        await asyncio.sleep(float(query.get("delay", "1")))
        return 200, b"slow", []

    async def _status(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        return int(query.get("code", "400")), b"custom error", []

    async def _hold(self, scope: Scope, query: dict[str, str], body: bytes) -> Answer:
        self.held += 1
        try:
            released = await asyncio.to_thread(self.gate.wait, 30)
        finally:
            self.held -= 1
        return (200 if released else 504), b"released", []

    async def _chunked(self, send: Any, parts: int, size: int) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"x-upstream", self.name.encode())],
            }
        )
        for i in range(parts):
            chunk = bytes([ord("a") + i % 26]) * size
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": b""})

    async def _drip(self, send: Any, receive: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        message = await receive()  # uvicorn answers http.disconnect when the client leaves
        if message["type"] == "http.disconnect":
            self.disconnects += 1


class RawInstance:
    """An instance on a bare TCP server (a thread per connection), for what uvicorn never
    does. It reads each request whole (head and Content-Length body) into :attr:`bodies`;
    then with ``crash`` it closes the connection without answering, as an instance whose
    process dies on the request; otherwise it answers 200 with the body and keeps the
    connection until it has been idle ``idle_s``, then closes it (:attr:`idle_closes`).
    """

    def __init__(self, name: str, *, crash: bool = False, idle_s: float = 0.1) -> None:
        self.name = name
        self.crash = crash
        self.idle_s = idle_s
        self.bodies: list[bytes] = []
        self.connections = 0
        self.idle_closes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @contextmanager
    def serving(self) -> Iterator[str]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        accepting.start()
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            self._stop.set()
            accepting.join(10)
            for thread in self._threads:
                thread.join(10)
            listener.close()

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            buffered = b""
            while not self._stop.is_set():
                conn.settimeout(self.idle_s if not buffered else 10)
                try:
                    while b"\r\n\r\n" not in buffered:
                        data = conn.recv(65536)
                        if not data:
                            return
                        buffered += data
                except TimeoutError:
                    with self._lock:
                        self.idle_closes += 1
                    return
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buffered) < length:
                    buffered += conn.recv(65536)
                body, buffered = buffered[:length], buffered[length:]
                with self._lock:
                    self.bodies.append(body)
                if self.crash:
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nx-upstream: %s\r\n\r\n%s"
                    % (len(body), self.name.encode(), body)
                )
