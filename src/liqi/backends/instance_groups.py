"""Instances in several resource groups behind the one :class:`InstanceBackend` the reconciler
holds: :meth:`start` goes to the backend of the spec's ``group``, :meth:`status` and
:meth:`stop` to that of the handle's ``backend``, which is the group's name (so a handle
stored before groups existed, ``"local"``, still finds the local backend)."""

from __future__ import annotations

from collections.abc import Mapping

from liqi.backends.instances import (
    InstanceBackend,
    InstanceHandle,
    InstancePhase,
    InstanceSpec,
    InstanceStatus,
)
from liqi.errors import BackendError


class GroupedInstanceBackend(InstanceBackend):
    name = "groups"

    def __init__(self, backends: Mapping[str, InstanceBackend]) -> None:
        self.backends = dict(backends)

    def _of(self, group: str) -> InstanceBackend | None:
        return self.backends.get(group)

    def start(self, spec: InstanceSpec) -> InstanceHandle:
        backend = self._of(spec.group)
        if backend is None:
            known = ", ".join(sorted(self.backends))
            raise BackendError(
                f"Resource group {spec.group!r} is not configured on this server (groups: "
                f"{known}); set it in LIQI_RESOURCE_GROUPS or change metadata.resource."
            )
        return InstanceHandle(spec.group, backend.start(spec).ref)

    def _inner(self, handle: InstanceHandle) -> tuple[InstanceBackend | None, InstanceHandle]:
        backend = self._of(handle.backend)
        name = backend.name if backend is not None else handle.backend
        return backend, InstanceHandle(name, handle.ref)

    def status(self, handle: InstanceHandle, spec: InstanceSpec) -> InstanceStatus:
        backend, inner = self._inner(handle)
        if backend is None:
            return InstanceStatus(
                InstancePhase.EXITED,
                reason=f"its resource group {handle.backend!r} is no longer configured on "
                "this server (LIQI_RESOURCE_GROUPS); whatever runs there is not watched",
            )
        return backend.status(inner, spec)

    def stop(self, handle: InstanceHandle, spec: InstanceSpec, *, grace_s: float = 30.0) -> None:
        backend, inner = self._inner(handle)
        if backend is not None:
            backend.stop(inner, spec, grace_s=grace_s)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
