"""Logging set-up, called by entry points only (never on import)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from liqi.logs.repeats import RepeatCollapsingHandler


def configure_logging(
    level: int = logging.INFO, *, clock: Callable[[], float] = time.monotonic
) -> None:
    """Log to stderr, a record that repeats once per window (:mod:`liqi.logs.repeats`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [RepeatCollapsingHandler(handler, clock=clock)]
    root.setLevel(level)
    for noisy in ("alembic", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
