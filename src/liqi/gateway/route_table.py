"""The gateway's routing table: which ready instances serve each service, and its token.

The reconciler (a thread) writes it; the gateway (the control plane's event loop) reads it on
every request, without a lock: each :class:`ServiceRoute` is frozen and replaced whole, and a
dict lookup or assignment is atomic under the GIL. The gateway writes back what only it sees:
requests per service (the autoscaler's QPS), requests in flight per instance (so an instance
is stopped only once it has none), and wake-ups for a service scaled to zero.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Upstream:
    """One ready instance: where to send requests."""

    instance_id: str
    url: str  # http://127.0.0.1:<port>, no trailing slash


@dataclass(frozen=True)
class ServiceRoute:
    name: str
    token: str | None  # None: no token needed (generate_token "false")
    upstreams: tuple[Upstream, ...]  # ready instances taking traffic; may be empty
    state: str  # the service's state, for the 503 message
    reason: str = ""  # why no instance is ready, for the 503 message
    scale_from_zero: bool = False  # hold a request while an instance starts (autoscaler min 0)
    max_body_bytes: int = 64 * 2**20
    # A request may be sent twice (built-in processors; a python one only when its spec says
    # so): the gateway then retries one an instance may have received.
    idempotent: bool = True


class RouteTable:
    def __init__(self) -> None:
        self._routes: dict[str, ServiceRoute] = {}
        self._requests: dict[str, int] = {}
        self._outstanding: dict[str, int] = {}
        self._lock = threading.Lock()
        self.on_wake: Callable[[str], None] | None = None

    # -- reconciler side ------------------------------------------------------------------

    def set(self, route: ServiceRoute) -> None:
        self._routes[route.name] = route

    def add(self, route: ServiceRoute) -> bool:
        """Publish ``route`` unless its service already has one (atomic); True if it did."""
        return self._routes.setdefault(route.name, route) is route

    def remove(self, name: str) -> None:
        self._routes.pop(name, None)

    def outstanding(self, instance_id: str) -> int:
        """Requests the gateway has sent to the instance and not yet seen answered."""
        return self._outstanding.get(instance_id, 0)

    def take_request_counts(self) -> dict[str, int]:
        """Requests per service since the last call (the gateway's count)."""
        with self._lock:
            counts, self._requests = self._requests, {}
        return counts

    # -- gateway side (event loop) ----------------------------------------------------------

    def get(self, name: str) -> ServiceRoute | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return sorted(self._routes)

    def count_request(self, name: str) -> None:
        with self._lock:
            self._requests[name] = self._requests.get(name, 0) + 1

    def begin(self, instance_id: str) -> None:
        with self._lock:
            self._outstanding[instance_id] = self._outstanding.get(instance_id, 0) + 1

    def end(self, instance_id: str) -> None:
        with self._lock:
            left = self._outstanding.get(instance_id, 0) - 1
            if left > 0:
                self._outstanding[instance_id] = left
            else:
                self._outstanding.pop(instance_id, None)

    def wake(self, name: str) -> None:
        """A request is waiting for a service with no ready instance (scaled to zero)."""
        if self.on_wake is not None:
            self.on_wake(name)
