"""What the nodes of a Ray cluster have (the State API's ``/api/v0/nodes``), so that a job or a
service instance no node could ever take is refused when it is submitted: Ray would keep it
PENDING for ever, with nothing to tell the user why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from liqi.errors import InvalidRequestError

MB = 1024 * 1024


@dataclass(frozen=True)
class NodeSize:
    cpu: float
    memory_mb: int
    ip: str = ""

    def describe(self) -> str:
        return f"{self.cpu:g} CPU and {self.memory_mb} MB" + (f" ({self.ip})" if self.ip else "")


def node_sizes(address: str, timeout_s: float = 2.0) -> list[NodeSize] | None:
    """The alive nodes of the cluster whose dashboard is at ``address``; None when it cannot
    be asked (the caller then lets Ray decide)."""
    params: list[tuple[str, str | int | float | bool | None]] = [
        ("detail", "true"),
        ("filter_keys", "state"),
        ("filter_predicates", "="),
        ("filter_values", "ALIVE"),
    ]
    try:
        answer = httpx.get(
            f"{address}/api/v0/nodes", params=params, timeout=timeout_s, trust_env=False
        )
        answer.raise_for_status()
        nodes = answer.json()["data"]["result"]["result"]
        sizes = []
        for node in nodes:
            total = node.get("resources_total") or {}
            cpu = float(total.get("CPU", 0))
            memory = int(float(total.get("memory", 0)) // MB)
            sizes.append(NodeSize(cpu, memory, str(node.get("node_ip") or "")))
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return sizes


def too_big(nodes: list[NodeSize], cpu: float, memory_mb: int | None) -> bool:
    """Whether no node has ``cpu`` CPUs and ``memory_mb`` MB (None: any) at once."""
    return not any(n.cpu >= cpu and (memory_mb is None or n.memory_mb >= memory_mb) for n in nodes)


@dataclass
class Capacity:
    """:func:`node_sizes` of each cluster, remembered ``ttl_s``. Thread-safe."""

    ttl_s: float = 5.0
    timeout_s: float = 2.0
    ask: Callable[[str, float], list[NodeSize] | None] = node_sizes
    clock: Callable[[], float] = time.monotonic
    _known: dict[str, tuple[float, list[NodeSize] | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def nodes(self, address: str) -> list[NodeSize] | None:
        with self._lock:
            at, nodes = self._known.get(address, (-1e9, None))
            if self.clock() - at < self.ttl_s:
                return nodes
        nodes = self.ask(address, self.timeout_s)
        with self._lock:
            self._known[address] = (self.clock(), nodes)
        return nodes

    def require(
        self, address: str, where: str, what: str, cpu: float, memory_mb: int | None
    ) -> None:
        """Raise InvalidRequestError when no node at ``address`` could run ``what`` (asking
        ``cpu`` and ``memory_mb``); ``where`` names the group in the message."""
        nodes = self.nodes(address)
        if not nodes or not too_big(nodes, cpu, memory_mb):
            return
        asked = f"{cpu:g} CPU" + (f" and {memory_mb} MB" if memory_mb is not None else "")
        biggest = sorted(nodes, key=lambda n: (n.cpu, n.memory_mb))[-1]
        raise InvalidRequestError(
            f"{what} asks for {asked}, and no node of resource group {where} has that much "
            f"(its {len(nodes)} node(s): the largest has {biggest.describe()}). Ask for less, "
            "or add a larger node to the cluster; Ray would keep it waiting for ever."
        )
