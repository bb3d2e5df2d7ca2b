"""Remember recently seen request nonces so a captured signed request cannot be replayed."""

from __future__ import annotations

import threading
from collections import OrderedDict


class NonceCache:
    """Nonces seen in the last ``window_s`` seconds, bounded to ``max_entries``.

    Thread-safe. Times are seconds from any monotonic clock the caller picks; the cache does
    not read a clock itself. When the bound is reached the oldest nonce is forgotten first;
    since those are also the ones closest to expiry, a replay then still needs a date inside
    the signature window.
    """

    def __init__(self, window_s: float, max_entries: int = 200_000) -> None:
        self._window_s = window_s
        self._max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, nonce: str, now_s: float) -> bool:
        """Record ``nonce``; False when it was already seen inside the window."""
        with self._lock:
            self._expire(now_s)
            if nonce in self._seen:
                return False
            self._seen[nonce] = now_s
            while len(self._seen) > self._max_entries:
                self._seen.popitem(last=False)
            return True

    def _expire(self, now_s: float) -> None:
        horizon = now_s - self._window_s
        while self._seen:
            oldest_nonce, seen_at = next(iter(self._seen.items()))
            if seen_at >= horizon:
                break
            del self._seen[oldest_nonce]

    def __len__(self) -> int:
        return len(self._seen)
