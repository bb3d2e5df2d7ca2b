"""A real model server (uvicorn, port 0) in a thread, around a ServingApp."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from liqi.asgi.header_timeout import DEFAULT_HEADER_TIMEOUT_S
from liqi.asgi.listen import url_of
from liqi.serving.app import ServingApp
from liqi.serving.server import bind, uvicorn_server


@dataclass
class LiveModelServer:
    app: ServingApp
    url: str

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0, trust_env=False, **kwargs)  # type: ignore[arg-type]


def wait_ready(url: str, timeout_s: float = 120.0, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{url}{path}", timeout=2.0, trust_env=False)
            if answer.status_code == 200:
                return
            last = answer.text
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise TimeoutError(f"model server at {url} not ready after {timeout_s}s: {last}")


@contextmanager
def live_model_server(
    app: ServingApp, *, ready: bool = True, header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
) -> Iterator[LiveModelServer]:
    sock = bind("127.0.0.1", 0, reuse_port=False)
    url = url_of(sock)
    server = uvicorn_server(app, drain_timeout_s=5, header_timeout_s=header_timeout_s)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_ready(url, path="/readyz" if ready else "/healthz")
        yield LiveModelServer(app=app, url=url)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
