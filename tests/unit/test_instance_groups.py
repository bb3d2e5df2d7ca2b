"""Instances by resource group (GroupedInstanceBackend) and the Ray instance backend's reading
of Ray's answers (the actor's URL in its repr, how a DEAD actor is worded), without a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from liqi.backends.instance_groups import GroupedInstanceBackend
from liqi.backends.instances import (
    InstanceBackend,
    InstanceHandle,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
)
from liqi.backends.ray_instance_actor import EXIT_FILE, url_of
from liqi.backends.ray_instances import RayInstanceBackend, _dead
from liqi.errors import BackendError


class Recording(InstanceBackend):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]
        self.calls: list[tuple[str, str]] = []

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        self.calls.append(("start", spec.instance_id))
        return InstanceHandle(self.name, "ref-1")

    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        self.calls.append(("status", f"{handle.backend}:{handle.ref}"))
        return InstanceStatus(InstancePhase.READY, url="http://127.0.0.1:1")

    def stop(self, handle: InstanceHandle, spec: InstanceSpec, *, grace_s: float = 30.0) -> None:
        self.calls.append(("stop", f"{handle.backend}:{handle.ref}"))


def spec(tmp_path: Path, group: str = "local") -> InstanceSpec:
    return InstanceSpec("svc-v1-abc", "svc", "oss://b/m/", str(tmp_path / "i"), group=group)


def test_start_goes_to_the_specs_group_and_the_handle_names_it(tmp_path: Path) -> None:
    local, ray = Recording("local"), Recording("ray")
    grouped = GroupedInstanceBackend({"local": local, "gpu": ray})
    handle = grouped.start(spec(tmp_path, "gpu"))
    assert handle == InstanceHandle("gpu", "ref-1")
    assert grouped.status(handle, spec(tmp_path, "gpu")).phase is InstancePhase.READY
    grouped.stop(handle, spec(tmp_path, "gpu"))
    # The inner backend sees its own name in the handle; the local one is not asked.
    assert ray.calls == [("start", "svc-v1-abc"), ("status", "ray:ref-1"), ("stop", "ray:ref-1")]
    assert local.calls == []
    # A handle stored before groups existed ("local") finds the local backend.
    grouped.status(InstanceHandle("local", "123"), spec(tmp_path))
    assert local.calls == [("status", "local:123")]


def test_a_group_gone_from_the_settings(tmp_path: Path) -> None:
    grouped = GroupedInstanceBackend({"local": Recording("local")})
    with pytest.raises(BackendError) as caught:
        grouped.start(spec(tmp_path, "gpu"))
    assert "Resource group 'gpu' is not configured on this server (groups: local)" in str(
        caught.value
    )
    status = grouped.status(InstanceHandle("gpu", "x"), spec(tmp_path, "gpu"))
    assert status.phase is InstancePhase.EXITED
    assert "its resource group 'gpu' is no longer configured" in status.reason
    grouped.stop(InstanceHandle("gpu", "x"), spec(tmp_path, "gpu"))  # nothing to stop: no error


def test_the_url_is_read_from_the_actors_repr() -> None:
    assert url_of("LiqiInstance(http://127.0.0.1:4321)") == "http://127.0.0.1:4321"
    assert url_of("") is None
    assert url_of("LiqiInstance()") is None
    assert url_of("Other(http://x)") is None


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        (
            {"actor_died_error_context": {"reason": "NODE_DIED", "node_ip_address": "10.0.0.7"}},
            "its Ray node 10.0.0.7 died",
        ),
        ({"actor_died_error_context": {"reason": "RAY_KILL"}}, "its Ray actor was killed"),
        ({"creation_task_failure_context": {"x": 1}}, "failed to start; see instance.log"),
        (
            {
                "actor_died_error_context": {
                    "reason": "WORKER_DIED",
                    "error_message": "The actor is dead because its worker process has died. "
                    "Worker exit type: SYSTEM_ERROR",
                }
            },
            "The actor is dead because its worker process has died",
        ),
        (None, "its Ray actor died"),
    ],
)
def test_a_dead_actor_is_worded_from_rays_cause(
    tmp_path: Path, cause: dict[str, object] | None, reason: str
) -> None:
    status = _dead({"state": "DEAD", "death_cause": cause}, spec(tmp_path))
    assert status.phase is InstancePhase.EXITED
    assert reason in status.reason


def test_the_watchers_exit_file_wins_over_rays_cause(tmp_path: Path) -> None:
    folder = tmp_path / "i"
    folder.mkdir()
    (folder / EXIT_FILE).write_text(json.dumps({"code": -9, "reason": "killed by signal 9"}))
    cause = {"actor_died_error_context": {"reason": "RAY_KILL"}}
    status = _dead({"state": "DEAD", "death_cause": cause}, spec(tmp_path))
    assert (status.reason, status.exit_code) == ("killed by signal 9", -9)


def test_an_unreachable_cluster_is_a_clear_error_and_leaves_no_secret(tmp_path: Path) -> None:
    backend = RayInstanceBackend("http://127.0.0.1:9", request_timeout_s=2)
    with pytest.raises(BackendError) as caught:
        backend.start(spec(tmp_path, "ray"))
    assert "http://127.0.0.1:9" in str(caught.value)
    assert not (tmp_path / "i" / "launch.json").exists()
    backend.close()


def test_a_dashboard_that_does_not_answer_changes_no_instance(tmp_path: Path) -> None:
    """Neither EXITED (the instance may serve on) nor an exception in the reconciler: the
    phase it had, with the reason."""
    backend = RayInstanceBackend("http://127.0.0.1:9", request_timeout_s=2)
    status = backend.status(InstanceHandle("ray", "liqi-svc-v1-abc-0000"), spec(tmp_path, "ray"))
    assert status.phase is InstancePhase.STARTING
    assert "http://127.0.0.1:9" in status.reason
    backend.close()


def test_capacity_refuses_what_no_node_could_take() -> None:
    from liqi.backends.ray_capacity import Capacity, NodeSize, too_big
    from liqi.errors import InvalidRequestError

    nodes = [NodeSize(8, 20_000, "10.0.0.1"), NodeSize(2, 64_000, "10.0.0.2")]
    assert not too_big(nodes, 8, 20_000)
    assert not too_big(nodes, 2, 60_000)
    assert too_big(nodes, 4, 30_000)  # CPUs on one node, memory on the other: never placed
    assert too_big([], 1, None)
    asked: list[str] = []

    def ask(address: str, timeout_s: float) -> list[NodeSize] | None:
        asked.append(address)
        return nodes if address == "http://known" else None

    capacity = Capacity(ask=ask, clock=lambda: 0.0)
    capacity.require("http://known", "'ray'", "The job", 8, None)
    with pytest.raises(InvalidRequestError) as caught:
        capacity.require("http://known", "'ray'", "The job", 9, 1000)
    assert caught.value.message.startswith(
        "The job asks for 9 CPU and 1000 MB, and no node of resource group 'ray' has that much "
        "(its 2 node(s): the largest has 8 CPU and 20000 MB (10.0.0.1))."
    )
    capacity.require("http://unknown", "'x'", "The job", 99, None)  # cannot tell: Ray decides
    assert asked == ["http://known", "http://unknown"]  # remembered within its ttl
