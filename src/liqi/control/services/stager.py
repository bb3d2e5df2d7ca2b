"""Staging off the reconciler's thread: what an instance needs on this machine before it
starts (a model archive downloaded, a processor fetched, a warm-up file copied) is fetched
by a small pool of worker threads, so one slow URL never stalls the reconciler or another
service.

The reconciler :meth:`Stager.submit`\\ s an order for an instance in state STAGING and, on
later ticks, :meth:`Stager.poll`\\ s it: ``None`` while it runs, then its
:class:`StagingOutcome` (the instance's spec, or the reason it failed). An order that runs
past ``timeout_s`` (on the reconciler's monotonic clock) is reported failed at once, and its
worker is told to stop; a cancelled order's outcome is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from liqi.backends.instances import InstanceSpec
from liqi.errors import LiqiError, StagingCancelledError

log = logging.getLogger(__name__)

Order = TypeVar("Order")


@dataclass(frozen=True)
class StagingOutcome:
    """How staging one instance ended: its spec, or why not."""

    instance_id: str
    spec: InstanceSpec | None
    error: str = ""


@dataclass
class _Running:
    future: Future[InstanceSpec]
    cancelled: threading.Event
    deadline: float  # on the monotonic clock


class Stager(Generic[Order]):
    """Runs ``stage(order, cancelled)`` for instances on ``workers`` threads.

    ``stage`` returns the instance's spec, or raises (a :class:`LiqiError`'s message is the
    reason shown to the user); it should look at ``cancelled`` between chunks of work.
    """

    def __init__(
        self,
        stage: Callable[[Order, threading.Event], InstanceSpec],
        *,
        clock: Callable[[], float],
        timeout_s: float,
        workers: int = 2,
    ) -> None:
        self._stage = stage
        self._clock = clock
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="liqi-staging")
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def submit(self, instance_id: str, order: Order) -> None:
        """Start staging ``instance_id`` (a no-op while it is being staged)."""
        with self._lock:
            if instance_id in self._running:
                return
            cancelled = threading.Event()
            deadline = self._clock() + self.timeout_s
            future = self._pool.submit(self._run, order, cancelled)
            self._running[instance_id] = _Running(future, cancelled, deadline)

    def knows(self, instance_id: str) -> bool:
        """Whether ``instance_id`` is being staged (or has an outcome to collect)."""
        with self._lock:
            return instance_id in self._running

    def poll(self, instance_id: str) -> StagingOutcome | None:
        """The outcome once staging ended (collected once), None while it runs or when the
        instance is unknown (see :meth:`knows`)."""
        with self._lock:
            running = self._running.get(instance_id)
            if running is None:
                return None
            if running.future.done():
                del self._running[instance_id]
                return _outcome(instance_id, running.future)
            if self._clock() >= running.deadline:
                del self._running[instance_id]
                running.cancelled.set()
                return StagingOutcome(
                    instance_id,
                    None,
                    f"staging took longer than {self.timeout_s:g} s (the staging timeout); "
                    "check that the model's URL answers, or raise LIQI_STAGING_TIMEOUT_S",
                )
            return None

    def cancel(self, instance_id: str) -> None:
        """Stop staging ``instance_id``; its outcome is dropped."""
        with self._lock:
            running = self._running.pop(instance_id, None)
        if running is not None:
            running.cancelled.set()

    def wait(self, timeout_s: float) -> None:
        """Block until every order submitted so far has finished (or ``timeout_s``)."""
        with self._lock:
            futures = [item.future for item in self._running.values()]
        wait(futures, timeout=timeout_s)

    def close(self) -> None:
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for item in running:
            item.cancelled.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, order: Order, cancelled: threading.Event) -> InstanceSpec:
        if cancelled.is_set():
            raise StagingCancelledError("staging was cancelled")
        return self._stage(order, cancelled)


def _outcome(instance_id: str, future: Future[InstanceSpec]) -> StagingOutcome:
    if future.cancelled():
        return StagingOutcome(instance_id, None, "staging was cancelled")
    exc = future.exception()
    if exc is None:
        return StagingOutcome(instance_id, future.result())
    if isinstance(exc, LiqiError):
        return StagingOutcome(instance_id, None, exc.message)
    if isinstance(exc, OSError):
        return StagingOutcome(instance_id, None, f"{type(exc).__name__}: {exc}")
    log.error("staging instance=%s failed", instance_id, exc_info=exc)
    return StagingOutcome(
        instance_id, None, f"internal error while staging: {type(exc).__name__}: {exc}"
    )
