"""RepeatCollapsingHandler: the same record within the window is written once, then counted."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from liqi.logs.repeats import RepeatCollapsingHandler

pytestmark = pytest.mark.timeout(30)


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def handler(clock: ManualClock, out: io.StringIO) -> Iterator[RepeatCollapsingHandler]:
    target = logging.StreamHandler(out)
    target.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    collapsing = RepeatCollapsingHandler(target, clock=clock, window_s=60.0)
    logger = logging.getLogger("tests.repeats")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers[:] = [collapsing]
    yield collapsing
    logger.handlers[:] = []
    logger.propagate = True


def reconcile(service_id: int) -> None:
    """Fails the same way every time, as a stuck reconciler tick does."""
    try:
        raise ValueError(f"database is locked (service {service_id})")
    except ValueError:
        logging.getLogger("tests.repeats").exception("service_id=%s reconcile failed", service_id)


def test_a_repeated_traceback_is_written_once_then_counted(
    handler: RepeatCollapsingHandler, clock: ManualClock, out: io.StringIO
) -> None:
    for _ in range(50):
        reconcile(7)
        clock.advance(0.2)
    clock.advance(60)
    logging.getLogger("tests.repeats").info("service_id=7 is ready")
    text = out.getvalue()
    assert text.count("Traceback (most recent call last)") == 1
    assert text.count("ValueError: database is locked (service 7)") == 1
    assert (
        "ERROR tests.repeats: (the last message repeated 49 times in 10 s) "
        "service_id=7 reconcile failed\n"
    ) in text
    assert text.endswith("INFO tests.repeats: service_id=7 is ready\n")
    assert text.index("repeated 49 times") < text.index("is ready")


def test_after_the_window_the_count_and_the_record_are_written_again(
    handler: RepeatCollapsingHandler, clock: ManualClock, out: io.StringIO
) -> None:
    for _ in range(400):  # 80 s of ticks: one window and a part
        reconcile(7)
        clock.advance(0.2)
    handler.close()
    text = out.getvalue()
    assert text.count("Traceback (most recent call last)") == 2
    assert text.count("(the last message repeated 299 times in 60 s)") == 1
    assert text.count("(the last message repeated 99 times in 20 s)") == 1  # at close


def test_different_records_are_not_folded(
    handler: RepeatCollapsingHandler, clock: ManualClock, out: io.StringIO
) -> None:
    for _ in range(3):
        reconcile(7)
        reconcile(8)  # interleaved: each is still a repeat of itself
        clock.advance(0.2)
    logging.getLogger("tests.repeats").warning("slow tick: %.1f s", 1.5)
    logging.getLogger("tests.repeats").warning("slow tick: %.1f s", 2.5)
    handler.close()
    text = out.getvalue()
    assert text.count("ValueError: database is locked (service 7)") == 1
    assert text.count("ValueError: database is locked (service 8)") == 1
    assert "repeated 2 times in 0 s) service_id=7" in text
    assert "repeated 2 times in 0 s) service_id=8" in text
    assert "slow tick: 1.5 s" in text
    assert "slow tick: 2.5 s" in text


def test_a_record_seen_once_gets_no_count_line(
    handler: RepeatCollapsingHandler, clock: ManualClock, out: io.StringIO
) -> None:
    reconcile(7)
    clock.advance(120)
    reconcile(7)
    handler.close()
    assert out.getvalue().count("Traceback") == 2
    assert "repeated" not in out.getvalue()
