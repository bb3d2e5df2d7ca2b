"""Dynamic batching policy (pure: the caller passes the time; no asyncio, no threads).

Two modes, chosen by ``max_batch_wait_s``:

- **adaptive** (``max_batch_wait_s == 0``, the default): a batch is ready as soon as anything
  is queued. While the model is busy, requests pile up, and the next :meth:`BatchQueue.take`
  gets all of them (up to ``max_batch_size`` rows): a batch of one at low load, large batches
  under load, and no request ever waits for a window to close.
- **windowed** (``max_batch_wait_s > 0``, TF Serving's ``batch_timeout_micros``, EAS's
  ``rpc.max_batch_timeout``): a batch is ready when it is full or when its oldest request has
  waited ``max_batch_wait_s``.

Requests carry a compatibility ``key`` (input names, dtypes and non-batch dimensions): a batch
holds only requests with the head request's key, oldest first, so requests are never reordered
within a key and a request of another shape waits for its own batch. ``put`` refuses a request
at once (:class:`~liqi.errors.OverloadedError`) when ``max_queue_size`` requests are queued.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, NoReturn, TypeVar

from liqi.errors import InvalidRequestError, OverloadedError

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 256  # rows (adaptive batching only fills it under load)
    max_batch_wait_s: float = 0.0
    max_queue_size: int = 1024  # requests

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise InvalidRequestError(f"max_batch_size={self.max_batch_size} must be 1 or more.")
        if self.max_batch_wait_s < 0:
            raise InvalidRequestError(
                f"max_batch_wait_s={self.max_batch_wait_s} must not be negative."
            )
        if self.max_queue_size < 1:
            raise InvalidRequestError(f"max_queue_size={self.max_queue_size} must be 1 or more.")

    @classmethod
    def from_eas(cls, rpc: dict[str, object]) -> BatchPolicy:
        """From EAS ``metadata.rpc``: ``batching``, ``max_batch_size``, ``max_batch_timeout``
        (milliseconds), ``max_queue_size``. Without ``batching`` every batch is one request."""
        enabled = str(rpc.get("batching", "false")).lower() in ("true", "1")

        def number(key: str, default: float) -> float:
            value = rpc.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise InvalidRequestError(f"metadata.rpc.{key}={value!r} must be a number.")
            try:
                number = float(value)
            except ValueError:
                raise InvalidRequestError(
                    f"metadata.rpc.{key}={value!r} must be a number."
                ) from None
            if not math.isfinite(number) or abs(number) > 1e9:
                raise InvalidRequestError(
                    f"metadata.rpc.{key}={value!r} must be a finite number up to 1e9."
                )
            return number

        return cls(
            max_batch_size=int(number("max_batch_size", 32)) if enabled else 1,
            max_batch_wait_s=number("max_batch_timeout", 0) / 1000 if enabled else 0.0,
            max_queue_size=int(number("max_queue_size", 1024)),
        )


@dataclass(frozen=True)
class _Entry(Generic[T]):
    item: T
    rows: int
    key: Hashable
    enqueued_at: float


class BatchQueue(Generic[T]):
    """Requests waiting for a model, handed out in batches. Not thread-safe: one owner (the
    serving loop) calls it."""

    def __init__(self, policy: BatchPolicy) -> None:
        self.policy = policy
        self._entries: deque[_Entry[T]] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, item: T, *, rows: int, key: Hashable, now: float) -> None:
        """Queue ``item`` (``rows`` rows). Raises OverloadedError when the queue is full."""
        if len(self._entries) >= self.policy.max_queue_size:
            self.refuse()
        self._entries.append(_Entry(item, max(rows, 1), key, now))

    def refuse(self) -> NoReturn:
        """Raise the OverloadedError of a full queue."""
        raise OverloadedError(
            f"The model's queue is full ({len(self._entries)} requests waiting, "
            f"max_queue_size={self.policy.max_queue_size}); retry shortly.",
            details={
                "queued": len(self._entries),
                "max_queue_size": self.policy.max_queue_size,
            },
        )

    def _head_batch(self) -> tuple[list[_Entry[T]], int]:
        """The batch the head would start: its key's entries, oldest first, up to the size."""
        head = self._entries[0]
        chosen = [head]
        rows = head.rows
        for entry in list(self._entries)[1:]:
            if entry.key != head.key:
                continue
            if rows + entry.rows > self.policy.max_batch_size:
                break
            chosen.append(entry)
            rows += entry.rows
        return chosen, rows

    def ready_at(self) -> float | None:
        """When the next batch may be taken: None if nothing is queued."""
        if not self._entries:
            return None
        if self.policy.max_batch_wait_s == 0:
            return self._entries[0].enqueued_at
        _, rows = self._head_batch()
        if rows >= self.policy.max_batch_size:
            return self._entries[0].enqueued_at
        return self._entries[0].enqueued_at + self.policy.max_batch_wait_s

    def take(self, now: float) -> list[T]:
        """The next batch if it is ready at ``now`` (else an empty list); removes it."""
        ready = self.ready_at()
        if ready is None or now < ready:
            return []
        chosen, _ = self._head_batch()
        taken = {id(e) for e in chosen}
        self._entries = deque(e for e in self._entries if id(e) not in taken)
        return [e.item for e in chosen]
