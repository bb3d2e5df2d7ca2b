"""Fakes at the seams, for unit tests of the control plane: a manual clock and an instance
backend whose instances are entries in a dict that the test moves along."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from liqi.backends.instances import (
    InstanceBackend,
    InstanceHandle,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
)
from liqi.errors import BackendError


class ManualClock:
    """A wall clock that moves only when told to, and its monotonic twin (``monotonic``):
    ``advance`` moves both, ``step`` the wall clock alone (as an operator or NTP would)."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
        self.elapsed_s = 0.0

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return self.elapsed_s

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.elapsed_s += seconds

    def step(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class FakeInstance:
    spec: InstanceSpec
    phase: InstancePhase = InstancePhase.STARTING
    reason: str = ""
    stop_asked: bool = False
    url: str = ""


@dataclass
class FakeInstanceBackend(InstanceBackend):
    """Instances that do what the test says: ``ready``, ``crash``, ``exit``. ``fail_start``
    makes the next starts raise BackendError."""

    name = "fake"
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    fail_start: int = 0
    started: list[str] = field(default_factory=list)
    _refs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        if self.fail_start > 0:
            self.fail_start -= 1
            raise BackendError(f"cannot start {spec.instance_id}: no room")
        ref = str(next(self._refs))
        self.instances[ref] = FakeInstance(spec, url=f"http://127.0.0.1:{9000 + int(ref)}")
        self.started.append(spec.instance_id)
        return InstanceHandle(self.name, ref)

    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        found = self.instances.get(handle.ref)
        if found is None:
            return InstanceStatus(InstancePhase.EXITED, reason="unknown process")
        url = found.url if found.phase is not InstancePhase.EXITED else None
        return InstanceStatus(found.phase, url=url, reason=found.reason)

    def stop(self, handle: InstanceHandle, spec: InstanceSpec, *, grace_s: float = 30.0) -> None:
        found = self.instances.get(handle.ref)
        if found is not None:
            found.stop_asked = True
            found.phase = InstancePhase.EXITED
            found.reason = "stopped"

    # -- what the test does -----------------------------------------------------------------

    def of(self, instance_id: str) -> FakeInstance:
        live = [i for i in self.instances.values() if i.spec.instance_id == instance_id]
        return live[-1]

    def ready_all(self) -> None:
        for instance in self.instances.values():
            if instance.phase is InstancePhase.STARTING:
                instance.phase = InstancePhase.READY

    def crash(self, instance_id: str, reason: str = "exited with code 1: boom") -> None:
        instance = self.of(instance_id)
        instance.phase = InstancePhase.EXITED
        instance.reason = reason

    def running(self) -> list[FakeInstance]:
        return [i for i in self.instances.values() if i.phase is not InstancePhase.EXITED]
