"""A loop on a thread of its own: :meth:`Ticker.tick` every ``tick_s`` seconds, or at once
when woken, until stopped. An exception in a tick is logged and the next tick comes anyway:
the loop never dies."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class Ticker(ABC):
    thread_name = "liqi-ticker"

    def __init__(self, tick_s: float) -> None:
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @abstractmethod
    def tick(self) -> None:
        """One look at the world."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wake(self) -> None:
        """Tick now instead of at the next interval."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                # NOTE: never let the loop die; the next tick tries again.
                log.exception("%s: tick failed", self.thread_name)
            self._wake.wait(self.tick_s)
            self._wake.clear()
