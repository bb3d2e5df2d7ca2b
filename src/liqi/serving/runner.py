"""The batch runner: requests from the event loop, batches run on worker threads.

The event loop calls :meth:`BatchRunner.infer` (or :meth:`BatchRunner.process` for a custom
processor); the request joins a :class:`~liqi.core.batching.BatchQueue` guarded by a
condition variable. Worker threads take ready batches from that queue, concatenate the
requests' inputs along the first dimension, run one model call and hand each request its
rows back through ``loop.call_soon_threadsafe``. The event loop never waits on the model.

With one worker (the default for tensor models) the queue fills while the model is busy,
so the next batch takes everything waiting: the adaptive batching of ``core/batching.py``.
A batch that fails is retried one request at a time, so a bad request fails only itself.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from liqi.core.batching import BatchPolicy, BatchQueue
from liqi.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    LiqiError,
    ModelError,
    ModelUnavailableError,
)
from liqi.serving.loaders import RawServable, Servable

log = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
BatchObserver = Callable[[int, int], None]  # (requests, rows) of each model call


@dataclass(eq=False)
class _Job:
    """One request waiting in the queue; resolved on the event loop."""

    future: asyncio.Future[Any]
    inputs: Mapping[str, np.ndarray] | None = None
    signature: str | None = None
    body: bytes = b""
    rows: int = 1
    result: Any = None
    error: BaseException | None = None
    cancelled: bool = field(default=False)


def _batch_key(inputs: Mapping[str, np.ndarray], signature: str | None) -> tuple[Hashable, int]:
    """The compatibility key (signature, names, dtypes, non-batch dims) and the row count.

    Inputs that disagree on their first dimension, or scalars, get a key of their own: they
    run alone."""
    rows: set[int] = set()
    parts: list[Hashable] = [signature]
    for name in sorted(inputs):
        array = inputs[name]
        if array.ndim == 0:
            return object(), 1
        rows.add(array.shape[0])
        parts.append((name, array.dtype.str, array.shape[1:]))
    if len(rows) != 1:
        return object(), 1
    return tuple(parts), rows.pop()


class BatchRunner:
    """Runs one model version's requests in batches on ``workers`` threads."""

    def __init__(
        self,
        servable: Servable,
        policy: BatchPolicy,
        *,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
        observe_batch: BatchObserver | None = None,
    ) -> None:
        self.servable = servable
        self.policy = policy
        self._clock = clock
        self._observe = observe_batch
        self._queue: BatchQueue[_Job] = BatchQueue(policy)
        self._batchable: dict[str | None, bool] = {}
        # The queue is guarded by a plain lock; workers sleep on a SimpleQueue of wake-up
        # tokens. Both are C-level: a round trip loop -> worker -> loop costs about half of
        # what threading.Condition (pure Python) does, measured at batch size 1.
        self._lock = threading.Lock()
        self._wake: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._stopping = False
        self._wake_pending = False  # event-loop side only, as is _in_flight
        self._in_flight = 0
        self._threads = [
            threading.Thread(
                target=self._work,
                name=f"liqi-{servable.name}-v{servable.version}-{i}",
                daemon=True,
            )
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- event loop side ----------------------------------------------------------------

    def check_admission(self) -> None:
        """Raise OverloadedError if a request arriving now would find the queue full."""
        if len(self._queue) >= self.policy.max_queue_size:
            self._queue.refuse()

    async def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        signature: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Outputs:
        """Run ``inputs`` through the model (batched with others). Raises OverloadedError
        at once when the queue is full, DeadlineExceededError after ``timeout_s``, and the
        model's LiqiError for a bad request."""
        key, rows = _batch_key(inputs, signature)
        batchable = self._batchable.get(signature)
        if batchable is None:
            try:
                batchable = self._batchable[signature] = self.servable.batchable(signature)
            except LiqiError:
                batchable = False  # an unknown signature: the model call will say so
        if not batchable:
            key = object()
        job = _Job(asyncio.get_running_loop().create_future(), inputs, signature, rows=rows)
        return await self._submit(job, key, timeout_s)  # type: ignore[no-any-return]

    async def process(self, body: bytes, *, timeout_s: float | None = None) -> tuple[bytes, int]:
        """Answer one raw request with a custom processor (never batched)."""
        job = _Job(asyncio.get_running_loop().create_future(), body=body)
        return await self._submit(job, object(), timeout_s)  # type: ignore[no-any-return]

    async def _submit(self, job: _Job, key: Hashable, timeout_s: float | None) -> Any:
        with self._lock:
            if self._stopping:
                raise ModelUnavailableError(
                    f"Model {self.servable.name!r} version {self.servable.version} is "
                    "unloading; retry the request."
                )
            self._queue.put(job, rows=job.rows, key=key, now=self._clock())
        self._in_flight += 1
        if self._in_flight == 1:
            self._wake.put(None)  # nothing else in flight: nobody will join, go now
        elif not self._wake_pending:
            # Under load, one wake-up per turn of the event loop: the requests parsed in
            # this turn reach the worker together (fewer hand-offs, larger batches).
            self._wake_pending = True
            job.future.get_loop().call_soon(self._post_wake)
        timer = None
        if timeout_s is not None:
            timer = job.future.get_loop().call_later(timeout_s, self._expire, job, timeout_s)
        try:
            return await job.future
        except asyncio.CancelledError:
            job.cancelled = True  # a worker that has not started it skips it
            raise
        finally:
            self._in_flight -= 1
            if timer is not None:
                timer.cancel()

    def _post_wake(self) -> None:
        self._wake_pending = False
        self._wake.put(None)

    def _expire(self, job: _Job, timeout_s: float) -> None:
        if not job.future.done():
            job.cancelled = True
            job.future.set_exception(
                DeadlineExceededError(
                    f"Model {self.servable.name!r} version {self.servable.version} did not "
                    f"answer within {timeout_s:g} s (--request-timeout-s); the server keeps "
                    "serving. Send fewer rows, or raise the timeout."
                )
            )

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued, then stop the workers (called off the event loop)."""
        with self._lock:
            self._stopping = True
        for _ in self._threads:
            self._wake.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- worker side --------------------------------------------------------------------

    def _next_batch(self) -> list[_Job] | None:
        while True:
            with self._lock:
                now = self._clock()
                ready_at = self._queue.ready_at()
                if ready_at is not None and (now >= ready_at or self._stopping):
                    batch = self._queue.take(max(now, ready_at))
                    if len(self._queue):
                        self._wake.put(None)  # another worker may take the next one
                    return batch
                if self._stopping:
                    self._wake.put(None)  # pass the news on to the next sleeping worker
                    return None
            try:
                self._wake.get(timeout=None if ready_at is None else max(0.0, ready_at - now))
            except queue.Empty:
                continue  # a batching window closed
            _drain(self._wake)  # one look at the queue serves every token already posted

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if not job.cancelled and not job.future.done()]
            if not live:
                continue
            try:
                self._run(live)
            except BaseException as exc:  # never let a worker die: fail the batch instead
                log.exception("model=%s batch failed unexpectedly", self.servable.name)
                for job in live:
                    job.error = job.error or exc
            loop = live[0].future.get_loop()
            try:
                loop.call_soon_threadsafe(_deliver, live)
            except RuntimeError:  # the loop closed while we ran (shutdown)
                return

    def _run(self, batch: list[_Job]) -> None:
        if isinstance(self.servable, RawServable):
            for job in batch:
                job.result = self.servable.process(job.body)
            self._observed(batch)
            return
        if len(batch) == 1:
            self._run_one(batch[0])
            self._observed(batch)
            return
        first = batch[0]
        assert first.inputs is not None
        joined = {
            name: np.concatenate([job.inputs[name] for job in batch if job.inputs is not None])
            for name in first.inputs
        }
        total = sum(job.rows for job in batch)
        try:
            outputs = self.servable.predict(joined, first.signature)
            if any(o.ndim == 0 or o.shape[0] != total for o in outputs.values()):
                raise InvalidRequestError("the model's outputs are not batched by row")
        except Exception:
            # One bad request must not fail its batch-mates: run each on its own.
            for job in batch:
                self._run_one(job)
                self._observed([job])
            return
        self._observed(batch)
        start = 0
        for job in batch:
            job.result = {name: value[start : start + job.rows] for name, value in outputs.items()}
            start += job.rows

    def _run_one(self, job: _Job) -> None:
        assert job.inputs is not None
        try:
            job.result = self.servable.predict(job.inputs, job.signature)
        except LiqiError as exc:
            job.error = exc
        except Exception as exc:  # the model itself failed: a 500 naming it, logged in full
            log.exception(
                "model=%s version=%s prediction failed", self.servable.name, self.servable.version
            )
            job.error = ModelError(
                f"Model {self.servable.name!r} version {self.servable.version} failed on "
                f"this request: {type(exc).__name__}: {_first_line(exc)}"
            )

    def _observed(self, batch: list[_Job]) -> None:
        if self._observe is not None:
            self._observe(len(batch), sum(job.rows for job in batch))


def _drain(tokens: queue.SimpleQueue[None]) -> None:
    try:
        while True:
            tokens.get_nowait()
    except queue.Empty:
        return


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _deliver(batch: list[_Job]) -> None:
    for job in batch:
        if job.future.done():
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)
