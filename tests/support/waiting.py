"""Waiting for a condition in a test: poll it every few milliseconds up to a deadline.

A test that sleeps and then asserts fails on a loaded machine and dawdles on an idle one;
``eventually`` (in a coroutine) and ``wait_until`` (in a thread) return as soon as the
condition holds and fail with a message naming it when the deadline passes. Prefer an event
or a callback the code under test offers; poll only state that has none.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(
    predicate: Callable[[], object],
    what: str,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.002,
) -> None:
    """Return once ``predicate()`` is true; raise AssertionError naming ``what`` (the
    condition, in words) if it is still false after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"Still waiting after {timeout_s:g} s for: {what}")
        await asyncio.sleep(interval_s)


def wait_until(
    predicate: Callable[[], object],
    what: str,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.002,
) -> None:
    """:func:`eventually` for code off the event loop: blocks the calling thread."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"Still waiting after {timeout_s:g} s for: {what}")
        time.sleep(interval_s)
