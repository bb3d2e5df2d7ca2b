"""A record that repeats is written once per window, the repeats as one count line (like
syslog's "last message repeated N times").

A loop that fails the same way on every tick (the reconciler runs every 0.2 s) would otherwise
write the same traceback five times a second. Records are the same when they come from the
same logger and line at the same level, with the same message (arguments applied) and the same
exception type and traceback. The first is written; the same record within ``window_s`` of it
is counted instead. The count is written as ``(the last message repeated N times in S s)``
followed by the message's first line, at the same level and logger, as soon as the window is
over and another record arrives (the record again starts a new window), and when the handler
is closed (at exit).
"""

from __future__ import annotations

import logging
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_WINDOW_S = 60.0
_MAX_KEYS = 256
_SUMMARY_CHARS = 200

_Key = tuple[str, int, str, int, str, str]


@dataclass
class _Seen:
    shown_at: float
    last: logging.LogRecord
    last_at: float
    repeats: int = 0


class RepeatCollapsingHandler(logging.Handler):
    """Passes records to ``target``, holding back repeats (see the module's docstring).

    ``clock`` gives seconds (``time.monotonic``); tests pass a manual one.
    """

    def __init__(
        self,
        target: logging.Handler,
        *,
        clock: Callable[[], float],
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        super().__init__(target.level)
        self.target = target
        self._clock = clock
        self._window_s = window_s
        self._seen: OrderedDict[_Key, _Seen] = OrderedDict()  # oldest shown first
        self._closed = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._closed:
                self.target.handle(record)
                return
            now = self._clock()
            self._expire(now)
            key = _key(record)
            seen = self._seen.get(key)
            if seen is not None:
                seen.repeats += 1
                seen.last, seen.last_at = record, now
                return
            self._seen[key] = _Seen(shown_at=now, last=record, last_at=now)
            if len(self._seen) > _MAX_KEYS:
                self._summarize(self._seen.popitem(last=False)[1])
            self.target.handle(record)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """Write the counts still held back; records after this pass straight through."""
        self.acquire()
        try:
            if not self._closed:
                self._closed = True
                while self._seen:
                    self._summarize(self._seen.popitem(last=False)[1])
                self.target.flush()
        finally:
            self.release()
        super().close()

    def _expire(self, now: float) -> None:
        while self._seen:
            first = next(iter(self._seen.values()))
            if now - first.shown_at < self._window_s:
                return
            self._summarize(self._seen.popitem(last=False)[1])

    def _summarize(self, seen: _Seen) -> None:
        if not seen.repeats:
            return
        record = seen.last
        first_line = record.getMessage().partition("\n")[0][:_SUMMARY_CHARS]
        summary = logging.LogRecord(
            record.name,
            record.levelno,
            record.pathname,
            record.lineno,
            "(the last message repeated %d times in %.0f s) %s",
            (seen.repeats, seen.last_at - seen.shown_at, first_line),
            None,
            record.funcName,
        )
        self.target.handle(summary)


def _key(record: logging.LogRecord) -> _Key:
    if record.exc_info and record.exc_info[0] is not None:
        exc = "".join(traceback.format_exception(*record.exc_info))
    else:
        exc = record.exc_text or ""
    return (
        record.name,
        record.levelno,
        record.pathname,
        record.lineno,
        record.getMessage(),
        exc + (record.stack_info or ""),
    )
