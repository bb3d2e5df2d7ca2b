"""Prometheus metrics of one model server (its own registry, served on ``GET /metrics``).

- ``liqi_requests_total{model,version,protocol,status}``
- ``liqi_request_duration_seconds{model,version,protocol,status}`` (histogram)
- ``liqi_batch_size_rows{model,version}`` (histogram of rows per model call)
- ``liqi_queue_depth{model,version}`` (requests waiting, read at scrape time)
- ``liqi_model_load_seconds{model,version}``
- ``liqi_model_version_state{model,version,state}`` (1 for the version's current state)

Label children are cached: the hot path is a dict lookup, an ``inc`` and an ``observe``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from liqi.serving.runner import BatchObserver

if TYPE_CHECKING:
    from liqi.serving.manager import ModelManager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _ManagerCollector(Collector):
    """Queue depth, load times and version states, read from the manager at scrape time."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "liqi_queue_depth", "Requests waiting for the model.", labels=["model", "version"]
        )
        load = GaugeMetricFamily(
            "liqi_model_load_seconds",
            "Time to load the model version.",
            labels=["model", "version"],
        )
        state = GaugeMetricFamily(
            "liqi_model_version_state",
            "1 for the state each model version is in.",
            labels=["model", "version", "state"],
        )
        for model in self._manager.models.values():
            for entry in model.versions.values():
                labels = [model.name, str(entry.version)]
                state.add_metric([*labels, entry.state.value], 1)
                if entry.runner is not None:
                    depth.add_metric(labels, entry.runner.queue_depth)
                if entry.servable is not None:
                    load.add_metric(labels, entry.servable.load_time_s)
        yield depth
        yield load
        yield state


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "liqi_requests",
            "Prediction requests answered.",
            ["model", "version", "protocol", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "liqi_request_duration_seconds",
            "Time from the request's arrival to its answer.",
            ["model", "version", "protocol", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            "liqi_batch_size_rows",
            "Rows per model call.",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}

    def watch(self, manager: ModelManager) -> None:
        self.registry.register(_ManagerCollector(manager))

    def observe_request(
        self, model: str, version: str, protocol: str, status: int, seconds: float
    ) -> None:
        key = (model, version, protocol, status)
        children = self._children.get(key)
        if children is None:
            labels = (model, version, protocol, str(status))
            children = (self._requests.labels(*labels), self._latency.labels(*labels))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def batch_observer(self, model: str, version: int) -> BatchObserver:
        histogram = self._batch.labels(model, str(version))

        def observe(requests: int, rows: int) -> None:
            histogram.observe(rows)

        return observe

    def render(self) -> bytes:
        return generate_latest(self.registry)
