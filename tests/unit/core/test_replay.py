"""NonceCache: refuses a nonce seen inside the window, forgets it after, stays bounded."""

from __future__ import annotations

import threading

import pytest

from liqi.core.replay import NonceCache

WINDOW_S = 100.0


def test_nonce_cache_accepts_a_new_nonce() -> None:
    cache = NonceCache(window_s=WINDOW_S)

    assert cache.remember("n1", now_s=0.0) is True
    assert len(cache) == 1


@pytest.mark.parametrize(
    "later_s",
    [0.0, 0.001, WINDOW_S / 2, WINDOW_S - 0.001, WINDOW_S],
    ids=["same-instant", "just-after", "mid-window", "just-inside", "window-edge"],
)
def test_nonce_cache_refuses_a_duplicate_inside_the_window(later_s: float) -> None:
    cache = NonceCache(window_s=WINDOW_S)
    cache.remember("n1", now_s=1000.0)

    assert cache.remember("n1", now_s=1000.0 + later_s) is False
    assert len(cache) == 1


@pytest.mark.parametrize(
    "later_s",
    [WINDOW_S + 0.001, WINDOW_S + 1, 10 * WINDOW_S],
    ids=["just-past-window", "a-second-past", "long-after"],
)
def test_nonce_cache_accepts_the_nonce_again_after_the_window(later_s: float) -> None:
    cache = NonceCache(window_s=WINDOW_S)
    cache.remember("n1", now_s=1000.0)

    assert cache.remember("n1", now_s=1000.0 + later_s) is True
    assert len(cache) == 1


def test_nonce_cache_distinct_nonces_do_not_collide() -> None:
    cache = NonceCache(window_s=WINDOW_S)

    assert [cache.remember(n, now_s=0.0) for n in ("a", "b", "AKID:a", "a ")] == [True] * 4
    assert [cache.remember(n, now_s=1.0) for n in ("a", "b", "AKID:a", "a ")] == [False] * 4
    assert len(cache) == 4


def test_nonce_cache_forgets_expired_nonces() -> None:
    cache = NonceCache(window_s=WINDOW_S)
    for i in range(5):
        cache.remember(f"old-{i}", now_s=float(i))
    cache.remember("recent", now_s=90.0)

    cache.remember("trigger", now_s=103.5)  # horizon 3.5: old-0 .. old-3 have expired

    assert len(cache) == 3
    assert cache.remember("old-4", now_s=103.5) is False
    assert cache.remember("recent", now_s=103.5) is False
    assert cache.remember("old-0", now_s=103.5) is True


def test_nonce_cache_bound_evicts_the_oldest_first() -> None:
    cache = NonceCache(window_s=WINDOW_S, max_entries=3)
    for i, nonce in enumerate(["a", "b", "c", "d"]):
        assert cache.remember(nonce, now_s=float(i)) is True

    assert len(cache) == 3
    # "a" was forgotten to make room for "d"; the three newest are still refused.
    assert cache.remember("d", now_s=4.0) is False
    assert cache.remember("c", now_s=4.0) is False
    assert cache.remember("b", now_s=4.0) is False
    assert cache.remember("a", now_s=4.0) is True
    assert len(cache) == 3
    # Remembering "a" again evicted "b", the oldest left.
    assert cache.remember("b", now_s=5.0) is True


def test_nonce_cache_bound_holds_under_many_nonces() -> None:
    cache = NonceCache(window_s=WINDOW_S, max_entries=50)
    for i in range(1000):
        cache.remember(f"n{i}", now_s=i / 1000)

    assert len(cache) == 50
    assert cache.remember("n999", now_s=1.0) is False
    assert cache.remember("n950", now_s=1.0) is False
    assert cache.remember("n949", now_s=1.0) is True


def test_nonce_cache_concurrent_duplicates_accept_exactly_one() -> None:
    cache = NonceCache(window_s=WINDOW_S)
    start = threading.Barrier(16)
    results: list[bool] = []
    results_lock = threading.Lock()

    def attempt() -> None:
        start.wait(timeout=10)
        outcome = cache.remember("same-nonce", now_s=1.0)
        with results_lock:
            results.append(outcome)

    threads = [threading.Thread(target=attempt) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(results) == [False] * 15 + [True]
    assert len(cache) == 1
