"""Services: their states, their instances' states, and the rollout plan. Pure.

The reconciler asks :func:`plan_rollout` what to do next for one service, given the version
it should run, how many instances it wants and the instances it has; the answer honours
``rolling_strategy``: at most ``want + max_surge`` instances at once, and never fewer than
``want - max_unavailable`` ready ones while old ones are drained.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ServiceState(str, Enum):
    """CREATING -> RUNNING <-> UPDATING, SCALING; STOPPING -> STOPPED; FAILED; DELETING."""

    CREATING = "CREATING"
    RUNNING = "RUNNING"
    UPDATING = "UPDATING"
    SCALING = "SCALING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"
    DELETING = "DELETING"

    @property
    def is_settled(self) -> bool:
        """Nothing is in progress: `create` and friends stop waiting here."""
        return self in (ServiceState.RUNNING, ServiceState.STOPPED, ServiceState.FAILED)


class InstanceState(str, Enum):
    """STAGING -> STARTING -> READY -> DRAINING -> STOPPING -> (row removed); STAGING or a
    process that exits -> CRASHED -> STAGING (restart after a backoff)."""

    STAGING = "STAGING"  # its files (model archive, processor, warm-up file) are being fetched
    STARTING = "STARTING"  # the process runs, not ready yet
    READY = "READY"  # takes traffic
    DRAINING = "DRAINING"  # out of the routes, waiting for its requests in flight
    STOPPING = "STOPPING"  # asked to exit
    CRASHED = "CRASHED"  # exited on its own; waits for its restart

    @property
    def is_live(self) -> bool:
        return self in (InstanceState.STAGING, InstanceState.STARTING, InstanceState.READY)


@dataclass(frozen=True)
class InstanceView:
    """What the planner needs to know of one instance."""

    id: str
    version: int
    state: InstanceState


@dataclass(frozen=True)
class RolloutPlan:
    start: int = 0  # new instances of the target version to start
    drain: tuple[str, ...] = ()  # instances to take out of traffic and stop

    @property
    def idle(self) -> bool:
        return self.start == 0 and not self.drain


def plan_rollout(
    version: int, want: int, instances: list[InstanceView], *, max_surge: int, max_unavailable: int
) -> RolloutPlan:
    """The next step towards ``want`` ready instances of ``version`` (and none of others)."""
    # A crashed instance keeps its place (the reconciler restarts it after a backoff).
    live = [i for i in instances if i.state.is_live or i.state is InstanceState.CRASHED]
    new = [i for i in live if i.version == version]
    old = [i for i in live if i.version != version]
    new_ready = [i for i in new if i.state is InstanceState.READY]
    old_ready = [i for i in old if i.state is InstanceState.READY]
    surge = max(max_surge, 0)
    if surge == 0 and max_unavailable <= 0:
        surge = 1  # otherwise nothing could ever move
    drain: list[str] = []
    # Old instances that never became ready serve nobody: drop them at once.
    drain += [i.id for i in old if i.state is not InstanceState.READY]
    # Too many of the new version (scaled down): drop the not-ready ones first.
    extra = len(new) - want
    if extra > 0:
        rank = {
            InstanceState.CRASHED: 0,
            InstanceState.STAGING: 1,
            InstanceState.STARTING: 2,
            InstanceState.READY: 3,
        }
        by_readiness = sorted(new, key=lambda i: rank[i.state])
        drain += [i.id for i in by_readiness[:extra]]
    kept_new_ready = min(len(new_ready), want)
    # Old ready instances go while enough stay ready: the new ready ones plus the rest.
    floor = max(want - max(max_unavailable, 0), 0)
    removable_old = max(kept_new_ready + len(old_ready) - floor, 0)
    drain += [i.id for i in old_ready[:removable_old]]
    live_after = len(live) - len(drain)
    missing = max(want - min(len(new), want), 0)
    room = want + surge - live_after
    return RolloutPlan(start=max(min(missing, room), 0), drain=tuple(drain))


def restart_backoff_s(crashes: int, *, base_s: float = 1.0, cap_s: float = 60.0) -> float:
    """Seconds to wait before restarting an instance that crashed ``crashes`` times in a row."""
    if crashes <= 0:
        return 0.0
    return float(min(cap_s, base_s * 2 ** (crashes - 1)))


def service_state(
    *,
    deleting: bool,
    stopped: bool,
    failed: bool,
    ever_running: bool,
    version: int,
    want: int,
    instances: list[InstanceView],
) -> ServiceState:
    """The state a service shows, from what it wants and the instances it has."""
    if deleting:
        return ServiceState.DELETING
    present = [i for i in instances if i.state is not InstanceState.CRASHED]
    if stopped:
        return ServiceState.STOPPING if present else ServiceState.STOPPED
    if failed:
        return ServiceState.FAILED
    ready_new = [i for i in instances if i.version == version and i.state is InstanceState.READY]
    others = [i for i in present if i.version != version]
    if len(ready_new) == want and len(present) == want and not others:
        return ServiceState.RUNNING
    if not ever_running:
        return ServiceState.CREATING
    if others or any(i.version != version for i in instances):
        return ServiceState.UPDATING
    return ServiceState.SCALING
