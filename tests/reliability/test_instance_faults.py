"""Instances failing under a real control plane (local resource group, isolation "none"): a
``liqi serve`` process SIGKILLed under load, with a second instance and with none, a model
that hangs past the request timeout, and one that leaks memory past ``metadata.memory``.
Each test measures what clients saw (requests sent, failed, 503s, the longest request) and
prints it on pytest's terminal; docs/guarantees.md keeps the figures."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

from liqi.client import Client
from liqi.client.services import ServiceInfo
from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from tests.services.conftest import PROJECT, seed_spec, seeded_plane, wait_running, wait_until
from tests.services.test_services_live import _pid_of
from tests.support.servers import LiveServer
from tests.support.workloads import deploy_processor

pytestmark = pytest.mark.timeout(180)

CLIENT_TIMEOUT_S = 20.0  # each client request's own limit: a request that hits it hung


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path
) -> Iterator[LiveServer]:
    """A control plane with unconfined instances, project svc_tests and the MNIST model at
    oss://svc-models/models/1/."""
    home = tmp_path_factory.mktemp("inst-faults") / "home"
    with seeded_plane(home, mnist_saved_model, isolation="none") as live:
        yield live


@pytest.fixture(scope="module")
def admin(plane: LiveServer) -> Iterator[Client]:
    with plane.admin() as client:
        yield client


@pytest.fixture(scope="module")
def mnist_service(admin: Client) -> Iterator[str]:
    """The seed's MNIST service, two instances, shared by the kill tests (each scales it to
    what it needs): an instance starting cold takes long; one restarting takes a standby."""
    name = "fault_mnist"
    admin.create_service(seed_spec(name, metadata={"instance": 2, "memory": 2000}), project=PROJECT)
    wait_running(admin, name)
    yield name
    admin.delete_service(name)


def scaled(admin: Client, name: str, instances: int) -> ServiceInfo:
    """Service ``name`` scaled to ``instances``, all ready and the others gone."""
    admin.scale_service(name, instances)
    return wait_until(
        admin,
        name,
        lambda s: (
            s.state == "RUNNING"
            and s.is_settled
            and len(s.instances) == s.instances_ready == instances
        ),
    )


@pytest.fixture(scope="module")
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    test = read_data_sets(str(builtin_dir())).test
    return test.images[:50].astype(np.float32), test.labels[:50]


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a measured figure on pytest's terminal (not captured)."""

    def say(line: str) -> None:
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or capture is None:
            print(line)
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"{request.node.name}: {line}")

    return say


@dataclass
class Answer:
    status: int  # 0: no answer (the client's error is in text)
    text: str
    took_s: float
    at: float  # time.monotonic() when it ended


@dataclass
class Load:
    """``threads`` clients POSTing ``body`` to ``url`` back to back until stopped, each
    request with the client timeout; every answer is kept, and ``check`` judges the 200s
    (an AssertionError message per wrong one)."""

    url: str
    body: dict[str, object]
    check: Callable[[httpx.Response], str | None]
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)
        ]

    def __enter__(self) -> Load:
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=CLIENT_TIMEOUT_S + 10)

    def since(self, t: float) -> list[Answer]:
        with self._lock:
            return [a for a in self.answers if a.at > t]

    def _run(self) -> None:
        with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
            for _ in range(1_000_000):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                try:
                    response = client.post(self.url, json=self.body)
                except httpx.HTTPError as exc:
                    now = time.monotonic()
                    answer = Answer(0, repr(exc), now - started, now)
                else:
                    now = time.monotonic()
                    answer = Answer(response.status_code, response.text[:300], now - started, now)
                    if response.status_code == 200:
                        problem = self.check(response)
                        if problem:
                            with self._lock:
                                self.wrong.append(problem)
                with self._lock:
                    self.answers.append(answer)
                if answer.status != 200:
                    time.sleep(0.01)  # a client would back off: leave the CPU to the restart


def prediction_check(
    expected: np.ndarray,
) -> Callable[[httpx.Response], str | None]:
    """A check that a TF Serving answer holds ``expected``'s scores (and so its digit)."""

    def check(response: httpx.Response) -> str | None:
        try:
            scores = np.asarray(response.json()["predictions"])
        except (ValueError, KeyError) as exc:
            return f"unreadable answer {response.text[:200]!r}: {exc}"
        if scores.shape != expected.shape or not np.allclose(scores, expected, rtol=1e-4):
            return f"wrong prediction {scores.tolist()} (expected {expected.tolist()})"
        return None

    return check


def predict_url(plane: LiveServer, name: str) -> str:
    return f"{plane.url}/api/predict/{name}/v1/models/{name}:predict"


def reference(
    plane: LiveServer, name: str, mnist_digits: tuple[np.ndarray, np.ndarray]
) -> tuple[dict[str, object], np.ndarray]:
    """A request of two digits and the scores the service answers it with (right digits)."""
    images, labels = mnist_digits
    body: dict[str, object] = {"instances": images[:2].tolist()}
    answer = httpx.post(predict_url(plane, name), json=body, timeout=CLIENT_TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    scores = np.asarray(answer.json()["predictions"])
    assert list(np.argmax(scores, axis=1)) == list(labels[:2])
    return body, scores


def events_of(admin: Client, name: str) -> str:
    return "\n".join(e.message for e in admin.get_service(name).events)


# -- 1. one of two instances SIGKILLed under load ---------------------------------------------


def test_a_sigkilled_instance_under_load_costs_no_client_a_request(
    plane: LiveServer,
    admin: Client,
    mnist_service: str,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    report: Callable[[str], None],
) -> None:
    name = mnist_service
    info = scaled(admin, name, 2)
    victim = info.instances[0]
    pid = _pid_of(plane, victim.id)
    crashes_before = events_of(admin, name).count(f"instance {victim.id} crashed")
    body, expected = reference(plane, name, mnist_digits)
    with Load(predict_url(plane, name), body, prediction_check(expected), threads=4) as load:
        wait_until_answers(load, 20)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        replaced = wait_until(
            admin,
            name,
            lambda s: (
                s.instances_ready == 2
                and any(i.id == victim.id and i.restarts > victim.restarts for i in s.instances)
            ),
        )
        wait_until_answers(load, 20, after=time.monotonic())  # both serve again
    answers = load.answers
    failed = [a for a in answers if a.status != 200]
    report(
        f"{len(answers)} requests on 4 threads, {len(failed)} failed, "
        f"{len([a for a in answers if a.at > killed_at])} after the SIGKILL"
    )
    assert failed == []
    assert load.wrong == []
    assert len([a for a in answers if a.at > killed_at]) >= 20
    # The killed process is gone, its instance runs again in a new process, the crash is kept.
    assert not psutil_alive(pid)
    assert _pid_of(plane, victim.id) != pid
    assert all(i.state == "READY" for i in replaced.instances)
    events = events_of(admin, name)
    crashes = [e for e in events.splitlines() if e.startswith(f"instance {victim.id} crashed")]
    assert len(crashes) == crashes_before + 1, events
    assert "SIGKILL" in crashes[-1] or "signal 9" in crashes[-1], events
    assert f"instance {victim.id} restarted (restart {victim.restarts + 1})" in events, events


def wait_until_answers(load: Load, count: int, after: float = 0.0) -> None:
    """Until ``load`` has ``count`` answers (any status) ended after ``after``."""
    deadline = time.monotonic() + 60
    while len(load.since(after)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} answers in 60 s"
        time.sleep(0.05)


def psutil_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# -- 2. the only instance SIGKILLed ------------------------------------------------------------


def test_with_its_only_instance_killed_a_service_answers_503_until_it_is_back(
    plane: LiveServer,
    admin: Client,
    mnist_service: str,
    mnist_digits: tuple[np.ndarray, np.ndarray],
    report: Callable[[str], None],
) -> None:
    name = mnist_service
    info = scaled(admin, name, 1)
    victim = info.instances[0]
    pid = _pid_of(plane, victim.id)
    body, expected = reference(plane, name, mnist_digits)
    with Load(predict_url(plane, name), body, prediction_check(expected), threads=2) as load:
        wait_until_answers(load, 10)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(
            admin,
            name,
            lambda s: s.instances_ready == 1 and s.instances[0].restarts > victim.restarts,
        )
        back_at = time.monotonic()
        wait_until_answers(load, 20, after=back_at)
    after = [a for a in load.answers if a.at > killed_at]
    errors = [a for a in after if a.status != 200]
    unavailable = [a for a in errors if a.status == 503]
    longest = max(a.took_s for a in load.answers)
    report(
        f"{len(load.answers)} requests, {len(unavailable)} answered 503 while the instance "
        f"restarted ({back_at - killed_at:.1f} s), other errors: "
        f"{sorted({(a.status, a.text[:80]) for a in errors if a.status != 503})}; "
        f"longest request {longest * 1000:.0f} ms"
    )
    assert load.wrong == []
    assert [a for a in load.answers if a.at <= killed_at and a.status != 200] == []
    assert [a for a in after if a.status not in (200, 503)] == []  # no 502, no timeout
    assert unavailable, "no request saw the service without its instance"
    for answer in unavailable:  # the reason: the dead instance, or its crash once noticed
        noticed = f"Service {name!r} has no ready instance" in answer.text
        assert (
            "killed by signal 9 (SIGKILL)" in answer.text
            if noticed
            else f"Service {name!r}: no answer from instance {victim.id!r}." in answer.text
        ), answer.text
    assert longest < CLIENT_TIMEOUT_S
    assert [a.status for a in load.since(back_at)][-10:] == [200] * 10


# -- 3. a model that hangs --------------------------------------------------------------------

HANGS = """
    import threading
    import allspark

    class Hangs(allspark.BaseProcessor):
        def initialize(self):
            self.released = threading.Event()

        def process(self, data):
            if data == b"hang":  # 30 s unless released (by the test, once it is done)
                return b"released" if self.released.wait(30) else b"woke up", 200
            if data == b"release":
                self.released.set()
            return b"echo " + data, 200
"""


def test_a_model_that_hangs_answers_504_at_the_timeout_and_others_are_still_served(
    plane: LiveServer, admin: Client, tmp_path: Path, report: Callable[[str], None]
) -> None:
    name = "fault_hang"
    rpc = {"keepalive": 1000, "worker_threads": 4}  # 1 s request timeout, 4 threads
    deploy_processor(admin, name, tmp_path / "hang", HANGS, project=PROJECT, metadata={"rpc": rpc})
    url = f"{plane.url}/api/predict/{name}"

    def post(data: bytes) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        answer = httpx.post(url, content=data, timeout=CLIENT_TIMEOUT_S, trust_env=False)
        return answer, time.monotonic() - started

    with ThreadPoolExecutor(4) as pool:
        hung = [pool.submit(post, b"hang") for _ in range(2)]
        time.sleep(0.2)
        served = [pool.submit(post, b"%d" % i) for i in range(2)]
        others = [f.result() for f in served]
        hangs = [f.result() for f in hung]
    for answer, _ in others:
        assert (answer.status_code, answer.content) in {(200, b"echo 0"), (200, b"echo 1")}
    for answer, _ in hangs:
        assert answer.status_code == 504, answer.text
        assert f"Model {name!r} version 1 did not answer within 1 s" in answer.text, answer.text
    report(
        f"2 hung requests answered 504 in {', '.join(f'{t:.2f}' for _, t in hangs)} s; "
        f"2 others 200 in {', '.join(f'{t:.2f}' for _, t in others)} s"
    )
    # Still serving afterwards: the same instance, not restarted; its stuck threads go free.
    again, _ = post(b"release")
    assert (again.status_code, again.content) == (200, b"echo release")
    info = admin.get_service(name)
    assert info.state == "RUNNING"
    assert [i.restarts for i in info.instances] == [0]
    admin.delete_service(name)


# -- 4. a model that leaks memory -------------------------------------------------------------

LEAKS = """
    import allspark

    class Leaks(allspark.BaseProcessor):
        def initialize(self):
            self.kept = []

        def process(self, data):
            self.kept.append(b"x" * (40 * 2**20))  # 40 MB written, kept for ever
            return b"%d" % len(self.kept), 200
"""


def test_a_model_that_leaks_memory_is_killed_at_its_limit_and_restarted(
    plane: LiveServer, admin: Client, tmp_path: Path, report: Callable[[str], None]
) -> None:
    name = "fault_leak"
    info = deploy_processor(
        admin, name, tmp_path / "leak", LEAKS, project=PROJECT, metadata={"memory": 300}
    )
    instance = info.instances[0]
    pid = _pid_of(plane, instance.id)
    url = f"{plane.url}/api/predict/{name}"
    statuses: list[int] = []
    with httpx.Client(timeout=CLIENT_TIMEOUT_S, trust_env=False) as client:
        for _ in range(40):
            statuses.append(client.post(url, content=b"more").status_code)
            if not psutil_alive(pid):
                break
            time.sleep(0.3)  # the backend looks at the memory every tick (0.2 s)
    assert not psutil_alive(pid), f"still alive after {len(statuses)} requests: {statuses}"
    restarted = wait_until(
        admin, name, lambda s: s.instances_ready == 1 and s.instances[0].restarts >= 1
    )
    events = events_of(admin, name)
    crash = next(line for line in events.splitlines() if "crashed" in line)
    report(f"killed after {statuses.count(200)} requests of 40 MB: {crash}")
    assert f"instance {instance.id} crashed: out of memory: RSS " in crash
    assert "exceeded the limit of 300 MB (metadata.memory)" in crash
    rss_mb = int(crash.split("RSS ")[1].split(" MB")[0])
    assert 300 < rss_mb <= 300 + 3 * 40  # at its limit: within a few requests' leaks
    assert statuses[:-1] == [200] * (len(statuses) - 1), statuses
    assert restarted.state == "RUNNING"
    # The restarted instance starts from nothing: it serves again.
    answer = httpx.post(url, content=b"more", timeout=CLIENT_TIMEOUT_S, trust_env=False)
    assert (answer.status_code, answer.content) == (200, b"1")
    admin.delete_service(name)
