"""Clock steps: the control plane's wall clock jumps 10 minutes forward and back (a
steppable clock handed to a real control plane; the machine's clock is left alone).

What reads which clock: signatures compare the request's date with the server's *wall* clock
(they must: the client signs with its own) and remember nonces on the monotonic one; the
reconciler stores wall times but waits on the monotonic clock (a crashed instance's restart
backoff, a drain's timeout, staging's timeout, the autoscaler's cool-downs)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psutil
import pytest

from liqi.client import Client
from liqi.client.auth import SigningAuth
from liqi.client.services import ServiceInfo
from liqi.control.db.tables import ServiceInstance
from liqi.core import signing
from tests.services.conftest import PROJECT, seed_spec, seeded_plane, wait_running
from tests.support.servers import LiveServer, instance_folder
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

STEP_S = 10 * 60


class SteppableClock:
    """The machine's UTC clock plus an offset that a test steps, as NTP or an operator would."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return datetime.now(timezone.utc) + self._offset

    def step(self, seconds: float) -> None:
        with self._lock:
            self._offset += timedelta(seconds=seconds)

    def reset(self) -> None:
        with self._lock:
            self._offset = timedelta(0)


@pytest.fixture(scope="module")
def server_clock() -> SteppableClock:
    return SteppableClock()


@pytest.fixture(scope="module")
def plane(
    tmp_path_factory: pytest.TempPathFactory, mnist_saved_model: Path, server_clock: SteppableClock
) -> Iterator[LiveServer]:
    home = tmp_path_factory.mktemp("clocks") / "home"
    with seeded_plane(home, mnist_saved_model, clock=server_clock) as live:
        yield live
    server_clock.reset()


@pytest.fixture
def clock(server_clock: SteppableClock) -> Iterator[SteppableClock]:
    """The server's clock, put back where it belongs after the test."""
    yield server_clock
    server_clock.reset()


def whoami(plane: LiveServer, client_clock: SteppableClock | None) -> httpx.Response:
    """GET /whoami signed with the admin key, dated by ``client_clock`` (None: the machine's)."""
    profile = plane.admin_profile()
    current = profile.profiles[profile.current or "default"]
    assert current.access_id
    assert current.access_key
    auth = (
        SigningAuth(current.access_id, current.access_key, client_clock)
        if client_clock
        else SigningAuth(current.access_id, current.access_key)
    )
    with httpx.Client(base_url=plane.url, auth=auth, trust_env=False, timeout=30) as http:
        return http.get("/api/v1/whoami")


def test_signed_requests_follow_a_server_clock_step_and_refuse_only_a_real_skew(
    plane: LiveServer, clock: SteppableClock
) -> None:
    client = SteppableClock()  # a client whose clock agrees with the server's

    assert whoami(plane, client).status_code == 200
    clock.step(STEP_S)  # both step forward 10 minutes
    client.step(STEP_S)
    assert whoami(plane, client).status_code == 200
    clock.step(-2 * STEP_S)  # both step back, to 10 minutes behind the machine
    client.step(-2 * STEP_S)
    assert whoami(plane, client).status_code == 200

    # A client 10 minutes off is inside the documented window (docs/auth.md: 15 minutes);
    # one 20 minutes off is refused, saying it is the clock, and nothing is held against it.
    assert signing.MAX_CLOCK_SKEW_S == 15 * 60
    assert whoami(plane, None).status_code == 200  # the machine's clock: 10 minutes ahead
    client.step(2 * STEP_S)  # 10 minutes ahead of the machine: 20 from the server
    refused = whoami(plane, client)
    assert refused.status_code == 401, refused.text
    assert refused.json()["code"] == "request_expired"
    assert "clock" in refused.json()["message"]
    client.step(-2 * STEP_S)  # the clocks agree again
    assert whoami(plane, client).status_code == 200
    clock.reset()
    client.reset()
    assert whoami(plane, client).status_code == 200


def instance_pid(instance_id: str) -> int:
    for process in psutil.process_iter(["pid", "name"]):
        folder = instance_folder(process.info["pid"]) or ""
        if folder.endswith(f"/{instance_id}") and process.info["name"] != "bwrap":
            return int(process.info["pid"])
    raise AssertionError(f"no process for instance {instance_id}")


def ready_with_restarts(admin: Client, name: str, restarts: int, timeout_s: float) -> ServiceInfo:
    """Poll until the service's one instance is ready again after ``restarts`` restarts."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = admin.get_service(name)
        if (
            info.instances_ready == 1
            and len(info.instances) == 1
            and info.instances[0].restarts >= restarts
        ):
            return info
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name}: no instance ready after {restarts} restart(s) in {timeout_s:g} s "
                f"(the restart backoff waits on the wall clock?); last: {info}"
            )
        time.sleep(0.1)


def crash(plane: LiveServer, instance_id: str) -> None:
    """SIGKILL the instance and return once the reconciler has recorded the crash (read from
    its database: the step that follows falls inside the restart's 1 s backoff)."""
    assert plane.plane is not None
    os.kill(instance_pid(instance_id), signal.SIGKILL)

    def state() -> str | None:
        assert plane.plane is not None
        with plane.plane.sessions() as session:
            row = session.get(ServiceInstance, instance_id)
            return None if row is None else row.state

    wait_until(lambda: state() == "CRASHED", f"instance {instance_id} seen crashed", timeout_s=60)


# Scales to 2 instances past 2 requests/s, at once (no scale-up cool-down).
AUTOSCALER = {
    "min": 1,
    "max": 2,
    "strategies": {"qps": 2},
    "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0}},
}


def test_restart_backoff_and_autoscaling_survive_wall_clock_steps_of_ten_minutes(
    plane: LiveServer, clock: SteppableClock
) -> None:
    name = "mnist_clock"
    with plane.admin() as admin:
        admin.create_service(seed_spec(name, autoscaler=AUTOSCALER), project=PROJECT)
        info = wait_running(admin, name)
        instance_id = info.instances[0].id

        # A crash, then the wall clock steps back 10 minutes during the backoff: the restart
        # comes after its 1 s, not after the 10 minutes the wall clock would count.
        crash(plane, instance_id)
        clock.step(-STEP_S)
        info = ready_with_restarts(admin, name, 1, timeout_s=90)
        assert info.instances[0].id == instance_id
        assert info.instances[0].restarts == 1

        # A crash, then forward 20 minutes (10 ahead of the machine): one restart, no storm.
        crash(plane, instance_id)
        clock.step(2 * STEP_S)
        info = ready_with_restarts(admin, name, 2, timeout_s=90)
        for _ in range(30):  # a window of 3 s (or more on a busy machine): still 2 restarts
            time.sleep(0.1)
            again = admin.get_service(name)
            assert [i.restarts for i in again.instances] == [2], again
            assert again.instances_ready == 1
        answer = httpx.get(f"{plane.url}/api/predict/{name}", timeout=30, trust_env=False)
        assert answer.status_code == 200, answer.text[:300]

        # Back 20 minutes (10 behind the machine), then load: the autoscaler still measures
        # it and asks for a second instance (it measured nothing until the wall clock caught
        # up when its interval was counted on the wall clock).
        clock.step(-2 * STEP_S)
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=30, trust_env=False) as http:
            while admin.get_service(name).instances_wanted < 2:
                assert time.monotonic() < deadline, "no scale-up in 60 s after the step back"
                for _ in range(10):
                    assert http.get(f"{plane.url}/api/predict/{name}").status_code == 200
        events = [e.message for e in admin.get_service(name).events]
        assert any("autoscaler: 1 -> 2" in message for message in events), events
        admin.delete_service(name)
