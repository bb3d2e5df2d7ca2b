"""Real model servers for the client tests: MNIST (tokenless and with a token), a custom
processor, and a scripted raw ASGI app that answers 503 a given number of times."""

from __future__ import annotations

import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn

from liqi.asgi.listen import url_of
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.serving.server import ProcessorOptions, ServeOptions, bind, build_app
from tests.support.model_server import LiveModelServer, live_model_server, wait_ready

TOKEN = "client-test-token"


@pytest.fixture(scope="session")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    test = read_data_sets(str(builtin_dir())).test
    return test.images[:200].astype(np.float32), test.labels[:200]


def _serve_mnist(
    model: Path, factory: pytest.TempPathFactory, token: str | None
) -> Iterator[LiveModelServer]:
    cache = factory.mktemp("cache")
    options = ServeOptions(
        uri=str(model), cache_dir=cache, name="mnist", poll_interval_s=0, token=token
    )
    with live_model_server(build_app(options)) as server:
        yield server


@pytest.fixture(scope="module")
def served(
    mnist_saved_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveModelServer]:
    """`liqi serve` of the MNIST SavedModel, no token."""
    yield from _serve_mnist(mnist_saved_model, tmp_path_factory, None)


@pytest.fixture(scope="module")
def served_with_token(
    mnist_saved_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveModelServer]:
    """The same, protected by TOKEN."""
    yield from _serve_mnist(mnist_saved_model, tmp_path_factory, TOKEN)


@pytest.fixture(scope="module")
def custom_processor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveModelServer]:
    """An allspark processor that doubles a number, or fails on demand."""
    code = tmp_path_factory.mktemp("proc")
    (code / "app.py").write_text(
        textwrap.dedent(
            """
            import allspark

            class Doubler(allspark.BaseProcessor):
                def process(self, data):
                    if data == b"teapot":
                        return b"not a number", 400
                    return str(int(data) * 2).encode(), 200
            """
        )
    )
    options = ServeOptions(
        uri=str(code),
        cache_dir=code / "cache",
        name="doubler",
        poll_interval_s=0,
        processor=ProcessorOptions(name="python", path=str(code), entry="app.py"),
    )
    with live_model_server(build_app(options)) as server:
        yield server


@dataclass
class ScriptedServer:
    """A raw ASGI app: answers ``status`` (with ``body`` and ``headers``) to the first
    ``failures`` requests, then 200 with ``ok_body``; counts every request it gets."""

    url: str = ""
    failures: int = 0
    status: int = 503
    body: bytes = b"queue full"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ok_body: bytes = b"ok"
    ok_type: bytes = b"application/octet-stream"
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(
        self,
        *,
        failures: int,
        status: int = 503,
        body: bytes = b"queue full",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        with self.lock:
            self.calls, self.failures, self.status, self.body = 0, failures, status, body
            self.headers = headers or []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (await receive()).get("more_body", False):
            pass
        if scope["path"] == "/healthz":
            status, body, headers = 200, b"{}", []
        else:
            with self.lock:
                self.calls += 1
                failing = self.calls <= self.failures
            if failing:
                status, body, headers = self.status, self.body, self.headers
            else:
                status, body, headers = 200, self.ok_body, [(b"content-type", self.ok_type)]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    app = ScriptedServer()
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    sock = bind("127.0.0.1", 0, reuse_port=False)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    app.url = url_of(sock)
    try:
        wait_ready(app.url, timeout_s=20, path="/healthz")
        yield app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
