"""Autoscaling decisions (pure: the caller passes the time and the measured QPS).

EAS's ``qps`` strategy: keep each instance near ``qps_per_instance`` requests per second,
between ``min`` and ``max`` instances. Scaling up happens at once (after ``up_cooldown_s``
since the last change); scaling down waits ``down_cooldown_s`` of lower load, so a short
lull does not drop instances; ``min == 0`` scales to zero after ``idle_to_zero_s`` without
requests, and :meth:`Autoscaler.wake` brings one instance back for a waiting request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from liqi.errors import InvalidRequestError


@dataclass(frozen=True)
class ScalePolicy:
    min_instances: int
    max_instances: int
    qps_per_instance: float
    up_cooldown_s: float = 10.0
    down_cooldown_s: float = 60.0
    idle_to_zero_s: float = 300.0

    def __post_init__(self) -> None:
        if self.min_instances < 0 or self.max_instances < max(1, self.min_instances):
            raise InvalidRequestError(
                f"Autoscaler bounds min={self.min_instances} max={self.max_instances}: need "
                "0 <= min <= max and max >= 1."
            )
        if self.qps_per_instance <= 0:
            raise InvalidRequestError(
                f"Autoscaler qps={self.qps_per_instance:g} must be more than 0."
            )


class Autoscaler:
    """Instance counts for one service over time. Not thread-safe: the reconciler owns it."""

    def __init__(self, policy: ScalePolicy, *, instances: int, now: float) -> None:
        self.policy = policy
        self.instances = self._bounded(instances)
        self._changed_at = now
        self._low_since: float | None = None
        self._last_request_at = now

    def _bounded(self, count: int) -> int:
        return min(self.policy.max_instances, max(self.policy.min_instances, count))

    def wanted(self, qps: float) -> int:
        """Instances the load asks for, within the bounds (at least 1 while there is load)."""
        needed = math.ceil(qps / self.policy.qps_per_instance) if qps > 0 else 0
        return self._bounded(max(needed, 1 if qps > 0 else self.policy.min_instances))

    def observe(self, qps: float, now: float) -> int:
        """Feed one QPS measurement (all instances together); returns the instance count."""
        if qps > 0:
            self._last_request_at = now
        target = self.wanted(qps)
        policy = self.policy
        if target > self.instances:
            self._low_since = None
            if now - self._changed_at >= policy.up_cooldown_s or self.instances == 0:
                self._set(target, now)
        elif target < self.instances:
            if self._low_since is None:
                self._low_since = now
            to_zero = target == 0 and now - self._last_request_at >= policy.idle_to_zero_s
            calm = now - self._low_since >= policy.down_cooldown_s
            if (target > 0 and calm) or to_zero:
                self._set(target, now)
        else:
            self._low_since = None
        return self.instances

    def wake(self, now: float) -> int:
        """A request arrived while scaled to zero: start one instance now."""
        self._last_request_at = now
        if self.instances == 0:
            self._set(1, now)
        return self.instances

    def _set(self, count: int, now: float) -> None:
        self.instances = count
        self._changed_at = now
        self._low_since = None
