"""The rollout planner and the service state, driven step by step like the reconciler."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from liqi.core.services import (
    InstanceState,
    InstanceView,
    ServiceState,
    plan_rollout,
    restart_backoff_s,
    service_state,
)

pytestmark = pytest.mark.timeout(60)

READY, STARTING, CRASHED = InstanceState.READY, InstanceState.STARTING, InstanceState.CRASHED


def views(*items: tuple[str, int, InstanceState]) -> list[InstanceView]:
    return [InstanceView(i, v, s) for i, v, s in items]


def simulate(
    instances: list[InstanceView], version: int, want: int, surge: int, unavailable: int
) -> tuple[list[InstanceView], list[int]]:
    """Run the plan to the end: started instances become ready the next step, drained ones
    leave. Returns the final instances and the ready count seen at each step."""
    counter = 0
    seen: list[int] = []
    for _ in range(50):
        plan = plan_rollout(version, want, instances, max_surge=surge, max_unavailable=unavailable)
        if plan.idle and all(i.state is READY for i in instances):
            break
        live = [i for i in instances if i.id not in plan.drain]
        assert len(live) + plan.start <= max(want + max(surge, 1), len(instances))
        promoted = [InstanceView(i.id, i.version, READY) for i in live]
        for _ in range(plan.start):
            counter += 1
            promoted.append(InstanceView(f"n{counter}", version, STARTING))
        instances = promoted
        seen.append(sum(i.state is READY for i in instances))
    return instances, seen


def test_rolling_update_keeps_one_ready_instance_throughout() -> None:
    start = views(("a", 1, READY))
    plan = plan_rollout(2, 1, start, max_surge=1, max_unavailable=0)
    assert plan.start == 1
    assert plan.drain == ()
    waiting = [*start, InstanceView("b", 2, STARTING)]
    assert plan_rollout(2, 1, waiting, max_surge=1, max_unavailable=0).idle
    both = [*start, InstanceView("b", 2, READY)]
    assert plan_rollout(2, 1, both, max_surge=1, max_unavailable=0).drain == ("a",)
    final, seen = simulate(start, 2, 1, 1, 0)
    assert {i.version for i in final} == {2}
    assert len(final) == 1
    assert min(seen) >= 1


def test_scale_up_and_down_within_a_version() -> None:
    assert plan_rollout(1, 3, views(("a", 1, READY)), max_surge=1, max_unavailable=0).start == 2
    plan = plan_rollout(
        1, 1, views(("a", 1, READY), ("b", 1, STARTING), ("c", 1, READY)),
        max_surge=1, max_unavailable=0,
    )  # fmt: skip
    assert set(plan.drain) == {"b", "c"} or set(plan.drain) == {"b", "a"}
    assert "b" in plan.drain
    assert plan.start == 0


def test_scale_to_zero_drains_everything() -> None:
    plan = plan_rollout(
        1, 0, views(("a", 1, READY), ("b", 1, READY)), max_surge=1, max_unavailable=0
    )
    assert set(plan.drain) == {"a", "b"}
    assert plan.start == 0


def test_a_crashed_instance_keeps_its_place() -> None:
    plan = plan_rollout(1, 1, views(("a", 1, CRASHED)), max_surge=1, max_unavailable=0)
    assert plan.idle  # the reconciler restarts it after its backoff


def test_old_instances_that_never_became_ready_go_at_once() -> None:
    plan = plan_rollout(
        3, 1, views(("a", 1, READY), ("b", 2, STARTING), ("c", 2, CRASHED)),
        max_surge=1, max_unavailable=0,
    )  # fmt: skip
    assert set(plan.drain) == {"b", "c"}
    assert plan.start == 1


def test_no_surge_and_no_unavailability_still_moves() -> None:
    final, _ = simulate(views(("a", 1, READY), ("b", 1, READY)), 2, 2, 0, 0)
    assert sorted(i.version for i in final) == [2, 2]


@settings(max_examples=200, deadline=None)
@given(
    old=st.integers(0, 4),
    want=st.integers(0, 5),
    surge=st.integers(0, 3),
    unavailable=st.integers(0, 3),
)
def test_rollouts_converge_within_their_bounds(
    old: int, want: int, surge: int, unavailable: int
) -> None:
    start = [InstanceView(f"o{n}", 1, READY) for n in range(old)]
    final, seen = simulate(start, 2, want, surge, unavailable)
    assert len(final) == want
    assert all(i.version == 2 and i.state is READY for i in final)
    floor = min(old, max(want - unavailable, 0))
    assert all(count >= floor for count in seen)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [restart_backoff_s(n) for n in range(5)] == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert restart_backoff_s(30) == 60.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"deleting": True}, ServiceState.DELETING),
        ({"stopped": True}, ServiceState.STOPPING),
        ({"stopped": True, "instances": []}, ServiceState.STOPPED),
        ({"failed": True}, ServiceState.FAILED),
        ({}, ServiceState.RUNNING),
        ({"want": 2}, ServiceState.SCALING),
        ({"want": 2, "ever_running": False}, ServiceState.CREATING),
        ({"version": 2}, ServiceState.UPDATING),
        ({"want": 0, "instances": []}, ServiceState.RUNNING),
    ],
)
def test_service_state(kwargs: dict[str, object], expected: ServiceState) -> None:
    base: dict[str, object] = {
        "deleting": False,
        "stopped": False,
        "failed": False,
        "ever_running": True,
        "version": 1,
        "want": 1,
        "instances": views(("a", 1, READY)),
    }
    assert service_state(**{**base, **kwargs}) is expected  # type: ignore[arg-type]
