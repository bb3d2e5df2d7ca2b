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
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import pytest

from liqi.client.auth import SigningAuth
from liqi.core import signing
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from tests.services.conftest import PROJECT, seed_spec, seeded_plane, wait_running
from tests.support.servers import LiveServer, instance_folder

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
    server_errors: list[str] = field(default_factory=list)  # any answer but 200, 201, 503
    retry_afters: list[str] = field(default_factory=list)  # the Retry-After of each 503
    by_status_s: dict[int, list[float]] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return quantile(self.latencies_s, q)

    def p_of(self, status: int, q: float) -> float:
        return quantile(self.by_status_s.get(status, []), q)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
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
    took_s = time.monotonic() - start
    tally.latencies_s.append(took_s)
    tally.by_status_s.setdefault(response.status_code, []).append(took_s)
    tally.statuses[response.status_code] += 1
    if response.status_code == 503:
        tally.retry_afters.append(response.headers.get("retry-after", ""))
    elif response.status_code not in (200, 201):
        tally.server_errors.append(f"{what}: {response.status_code} {response.text[:300]}")


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """A control plane with project svc_tests and oss://svc-models/models/1/ = MNIST."""
    with seeded_plane(tmp_path_factory.mktemp("overload") / "home", mnist_saved_model) as live:
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
        # A fresh connection per request: the server closes a connection idle for 5 s
        # (uvicorn's keep-alive), and a client that reuses one as it closes gets a ReadError
        # however well the server does (HTTP/1.1's race, for clients to retry).
        limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=0)
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
    assert not tally.server_errors, f"{len(tally.server_errors)} errors: {tally.server_errors[:5]}"
    assert set(tally.statuses) <= {200, 201}, tally.statuses  # not even a 503
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


# -- the gateway at four times an instance's capacity ----------------------------------------

QUEUE = 4  # the instance's max_queue_size: it holds this many requests besides the one it runs
GATEWAY_CLIENTS = 4 * (QUEUE + 1)  # four times what it can hold
GATEWAY_REQUESTS_PER_CLIENT = 8
MB = 2**20


def instance_process(instance_id: str) -> psutil.Process:
    """The instance's ``liqi serve`` process: the one working in the instance's folder."""
    for process in psutil.process_iter(["pid", "name"]):
        folder = instance_folder(process.info["pid"]) or ""
        if folder.endswith(f"/{instance_id}") and process.info["name"] != "bwrap":
            return process
    raise AssertionError(f"no process for instance {instance_id}")


def drive(url: str, body: bytes, tally: Tally) -> None:
    """GATEWAY_CLIENTS clients at once, each sending its requests one after the other."""

    async def one_client(http: httpx.AsyncClient) -> None:
        for _ in range(GATEWAY_REQUESTS_PER_CLIENT):
            sent = http.post(url, content=body, headers={"content-type": "application/json"})
            await timed(tally, "predict", sent)

    async def crowd() -> None:
        limits = httpx.Limits(max_connections=GATEWAY_CLIENTS)
        async with httpx.AsyncClient(
            timeout=CLIENT_TIMEOUT_S, limits=limits, trust_env=False
        ) as http:
            await asyncio.gather(*(one_client(http) for _ in range(GATEWAY_CLIENTS)))

    asyncio.run(crowd())


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return read_data_sets(str(builtin_dir())).test.images[:50].astype(np.float32)


def test_the_gateway_at_four_times_an_instances_capacity_sheds_with_503_and_recovers(
    plane: LiveServer, digits: np.ndarray
) -> None:
    name = "mnist_flood"
    with plane.admin() as admin:
        admin.create_service(
            seed_spec(name, metadata={"instance": 1, "rpc": {"max_queue_size": QUEUE}}),
            project=PROJECT,
        )
        info = wait_running(admin, name)
    url = f"{plane.url}/api/predict/{name}/v1/models/{name}:predict"
    images = np.repeat(digits, 4, axis=0)  # 200 rows: a few ms of model time each
    body = httpx.Request("POST", url, json={"instances": images.tolist()}).read()
    instance = instance_process(info.instances[0].id)
    plane_process = psutil.Process()  # the control plane and its gateway run in this process

    warm_up = Tally()
    drive(url, body, warm_up)
    instance_rss, plane_rss = instance.memory_info().rss, plane_process.memory_info().rss
    tally = Tally()
    drive(url, body, tally)
    instance_after, plane_after = instance.memory_info().rss, plane_process.memory_info().rss

    for run in (warm_up, tally):
        total = sum(run.statuses.values()) + len(run.failures)
        assert total == GATEWAY_CLIENTS * GATEWAY_REQUESTS_PER_CLIENT
        assert not run.failures, f"unanswered: {run.failures[:5]}"
        assert set(run.statuses) <= {200, 503}, run.server_errors[:5]
        assert run.statuses[200] > 0
    overflow = warm_up.statuses[503] + tally.statuses[503]
    assert overflow > 0, "the instance was never full: the test did not overload it"
    assert not [e for e in tally.retry_afters + warm_up.retry_afters if not e.isdigit()], (
        "a 503 without a Retry-After (seconds)"
    )
    assert len(tally.retry_afters) + len(warm_up.retry_afters) == overflow
    # Afterwards: the instance and the gateway serve at once, on the first try.
    answer = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    assert len(answer.json()["predictions"]) == len(images)
    with plane.admin() as admin:
        assert admin.get_service(name).instances_ready == 1
        assert [i.restarts for i in admin.get_service(name).instances] == [0]
    # Memory does not grow with a second, equal load (a generous bound, not a benchmark).
    instance_growth, plane_growth = instance_after - instance_rss, plane_after - plane_rss
    assert instance_growth < max(30 * MB, instance_rss // 5), (instance_rss, instance_after)
    assert plane_growth < max(30 * MB, plane_rss // 5), (plane_rss, plane_after)
    report(
        f"gateway-overload: {GATEWAY_CLIENTS} clients on one instance (max_queue_size {QUEUE}), "
        f"2 x {GATEWAY_CLIENTS * GATEWAY_REQUESTS_PER_CLIENT} requests: second load "
        f"{dict(sorted(tally.statuses.items()))}, 0 unanswered, every 503 with Retry-After; "
        f"503 p50 {tally.p_of(503, 0.5) * 1000:.0f} ms, "
        f"200 p99 {tally.p_of(200, 0.99) * 1000:.0f} ms; "
        f"RSS instance {instance_rss / MB:.0f} -> {instance_after / MB:.0f} MB, "
        f"control plane {plane_rss / MB:.0f} -> {plane_after / MB:.0f} MB"
    )
    with plane.admin() as admin:
        admin.delete_service(name)
