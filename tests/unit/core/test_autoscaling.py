"""Autoscaler decisions with a manual clock."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from liqi.core.autoscaling import Autoscaler, ScalePolicy
from liqi.errors import InvalidRequestError

pytestmark = pytest.mark.timeout(30)

POLICY = ScalePolicy(
    min_instances=1, max_instances=5, qps_per_instance=10, up_cooldown_s=10, down_cooldown_s=60
)


def test_scales_up_after_the_cooldown_and_down_after_calm() -> None:
    scaler = Autoscaler(POLICY, instances=1, now=0)
    assert scaler.observe(35, now=5) == 1  # inside the up cool-down since start
    assert scaler.observe(35, now=10) == 4
    assert scaler.observe(100, now=15) == 4  # cool-down again
    assert scaler.observe(100, now=20) == 5  # capped at max
    assert scaler.observe(12, now=30) == 5  # lower load starts the calm period
    assert scaler.observe(12, now=89) == 5
    assert scaler.observe(12, now=90) == 2
    assert scaler.observe(0, now=200) == 2  # a lull must last down_cooldown_s
    assert scaler.observe(0, now=260) == 1  # never below min


def test_a_spike_resets_the_calm_period() -> None:
    scaler = Autoscaler(POLICY, instances=3, now=0)
    scaler.observe(5, now=100)
    scaler.observe(30, now=130)  # back at 3 instances' worth
    assert scaler.observe(5, now=161) == 3
    assert scaler.observe(5, now=221) == 1


def test_scale_to_zero_and_wake() -> None:
    policy = ScalePolicy(min_instances=0, max_instances=2, qps_per_instance=10, idle_to_zero_s=300)
    scaler = Autoscaler(policy, instances=1, now=0)
    assert scaler.observe(1, now=10) == 1
    assert scaler.observe(0, now=200) == 1  # idle, but not for idle_to_zero_s
    assert scaler.observe(0, now=310) == 0
    assert scaler.wake(now=320) == 1
    assert scaler.observe(0, now=330) == 1  # the woken instance is not dropped at once
    assert scaler.observe(15, now=400) == 2  # from 1, cool-down long past


def test_bounds_are_checked() -> None:
    with pytest.raises(InvalidRequestError, match="min=3 max=2"):
        ScalePolicy(min_instances=3, max_instances=2, qps_per_instance=1)
    with pytest.raises(InvalidRequestError, match="qps=0"):
        ScalePolicy(min_instances=1, max_instances=2, qps_per_instance=0)


@given(
    st.integers(0, 4),
    st.integers(1, 8),
    st.lists(st.floats(0, 500, allow_nan=False), min_size=1, max_size=40),
)
def test_always_within_bounds(low: int, extra: int, loads: list[float]) -> None:
    policy = ScalePolicy(min_instances=low, max_instances=low + extra, qps_per_instance=7)
    scaler = Autoscaler(policy, instances=low, now=0)
    for step, qps in enumerate(loads):
        count = scaler.observe(qps, now=step * 15.0)
        assert policy.min_instances <= count <= policy.max_instances
