"""Overload: the control plane's API under 200 concurrent clients, and the gateway driven at
four times what one instance can serve. Nothing answers 5xx but a 503 that says when to come
back; nothing hangs; afterwards everything serves at once and memory has not grown.

Latencies are measured and written to ``LIQI_GUARANTEES_OUT`` (when set), never asserted."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from liqi.client.auth import SigningAuth
from liqi.core import signing
from tests.support.servers import LiveServer, live_server

pytestmark = pytest.mark.timeout(180)

CLIENTS = 200
REQUESTS_PER_CLIENT = 2
CLIENT_TIMEOUT_S = 120.0  # generous: a request that takes this long counts as hung


@dataclass
class Tally:
    """Every answer's status, and how long each took (seconds), per kind of request."""

    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # timeouts and transport errors
    latencies_s: list[float] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def report(line: str) -> None:
    """Append a measured figure to the file the guarantees are written from, if asked."""
    out = os.environ.get("LIQI_GUARANTEES_OUT")
    if out:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")


async def timed(tally: Tally, what: str, send: Coroutine[Any, Any, httpx.Response]) -> None:
    start = time.monotonic()
    try:
        response = await send
    except httpx.HTTPError as exc:
        tally.failures.append(f"{what}: {type(exc).__name__}: {exc}")
        return
    tally.latencies_s.append(time.monotonic() - start)
    tally.statuses[response.status_code] += 1
    if response.status_code >= 500:
        tally.server_errors.append(f"{what}: {response.status_code} {response.text[:300]}")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("overload") / "home", None, standby=False) as live:
        yield live


def test_two_hundred_concurrent_clients_get_no_server_error_and_no_hang(
    plane: LiveServer,
) -> None:
    with plane.admin() as admin:
        access_id, secret = admin.config.access_id, admin.config.access_key
        admin.create_project("crowd")
        admin.create_bucket("crowd", project="crowd")
    assert access_id
    assert secret
    tally = Tally()
    names = itertools.count()

    async def one_client(http: httpx.AsyncClient, number: int) -> None:
        for i in range(REQUESTS_PER_CLIENT):
            kind = (number + i) % 8
            n = next(names)
            if kind in (0, 1):  # a small upload
                content = f"object {n}\n".encode() * 8
                headers = {
                    signing.CONTENT_HASH_HEADER: hashlib.sha256(content).hexdigest(),
                    "content-type": "application/octet-stream",
                }
                path = f"/api/v1/buckets/crowd/objects/c{number}/o{n}.txt"
                await timed(tally, f"PUT {path}", http.put(path, content=content, headers=headers))
            elif kind == 2:
                await timed(tally, "GET buckets", http.get("/api/v1/buckets"))
            elif kind == 3:
                await timed(
                    tally,
                    "GET objects",
                    http.get("/api/v1/buckets/crowd/objects", params={"limit": 100}),
                )
            elif kind == 4:
                await timed(tally, "GET jobs", http.get("/api/v1/jobs", params={"limit": 50}))
            elif kind == 5:
                await timed(tally, "GET services", http.get("/api/v1/services"))
            elif kind == 6:
                body = {"name": f"crowd-{n}", "project": "crowd", "backend": "local"}
                await timed(tally, "POST buckets", http.post("/api/v1/buckets", json=body))
            else:
                body = {"name": f"crowd_{n}", "description": "made under load"}
                await timed(tally, "POST projects", http.post("/api/v1/projects", json=body))

    async def crowd() -> float:
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=plane.url,
            auth=SigningAuth(access_id, secret),
            timeout=CLIENT_TIMEOUT_S,
            limits=limits,
            trust_env=False,
        ) as http:
            start = time.monotonic()
            await asyncio.gather(*(one_client(http, c) for c in range(CLIENTS)))
            return time.monotonic() - start

    took_s = asyncio.run(crowd())

    total = sum(tally.statuses.values()) + len(tally.failures)
    assert total == CLIENTS * REQUESTS_PER_CLIENT
    assert not tally.failures, f"{len(tally.failures)} requests unanswered: {tally.failures[:5]}"
    assert not tally.server_errors, (
        f"{len(tally.server_errors)} server errors: {tally.server_errors[:5]}"
    )
    assert set(tally.statuses) <= {200, 201}, tally.statuses
    uploads = 2 * CLIENTS * REQUESTS_PER_CLIENT // 8
    with plane.admin() as admin:  # every upload answered 201 is stored, once
        stored = list(admin.iter_objects("crowd"))
    assert len(stored) == uploads
    report(
        f"api-overload: {total} requests from {CLIENTS} concurrent clients in {took_s:.1f} s: "
        f"statuses {dict(sorted(tally.statuses.items()))}, 0 unanswered; "
        f"latency p50 {tally.p(0.5) * 1000:.0f} ms, p99 {tally.p(0.99) * 1000:.0f} ms, "
        f"max {max(tally.latencies_s) * 1000:.0f} ms"
    )
