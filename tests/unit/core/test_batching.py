"""BatchQueue: exact batch boundaries, driven by explicit times."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from liqi.core.batching import BatchPolicy, BatchQueue
from liqi.errors import InvalidRequestError, OverloadedError


def queue(**policy: float) -> BatchQueue[str]:
    return BatchQueue(BatchPolicy(**policy))  # type: ignore[arg-type]


def test_adaptive_batch_of_one_when_idle() -> None:
    q = queue(max_batch_size=8)
    q.put("a", rows=1, key="k", now=0.0)
    assert q.ready_at() == 0.0
    assert q.take(now=0.0) == ["a"]
    assert q.take(now=0.0) == []
    assert q.ready_at() is None


def test_adaptive_takes_everything_that_piled_up_while_busy() -> None:
    q = queue(max_batch_size=8)
    for i in range(5):
        q.put(f"r{i}", rows=1, key="k", now=0.001 * i)
    assert q.take(now=0.01) == ["r0", "r1", "r2", "r3", "r4"]


def test_flush_at_max_batch_size_rows() -> None:
    q = queue(max_batch_size=4)
    for i in range(3):
        q.put(f"r{i}", rows=2, key="k", now=0.0)
    assert q.take(now=0.0) == ["r0", "r1"]
    assert q.take(now=0.0) == ["r2"]


def test_oversized_request_runs_alone() -> None:
    q = queue(max_batch_size=4)
    q.put("big", rows=10, key="k", now=0.0)
    q.put("small", rows=1, key="k", now=0.0)
    assert q.take(now=0.0) == ["big"]
    assert q.take(now=0.0) == ["small"]


def test_windowed_waits_for_the_window_or_a_full_batch() -> None:
    q = queue(max_batch_size=4, max_batch_wait_s=0.010)
    q.put("a", rows=1, key="k", now=1.000)
    assert q.ready_at() == pytest.approx(1.010)
    assert q.take(now=1.005) == []
    q.put("b", rows=1, key="k", now=1.006)
    assert q.take(now=1.009) == []
    assert q.take(now=1.010) == ["a", "b"]
    for i in range(4):
        q.put(f"f{i}", rows=1, key="k", now=2.0)
    assert q.ready_at() == 2.0  # full: no need to wait
    assert q.take(now=2.0) == ["f0", "f1", "f2", "f3"]


def test_incompatible_shapes_are_not_batched_together_and_keep_their_order() -> None:
    q = queue(max_batch_size=8)
    q.put("a1", rows=1, key=("images", (784,)), now=0.0)
    q.put("b1", rows=1, key=("images", (28, 28)), now=0.0)
    q.put("a2", rows=1, key=("images", (784,)), now=0.0)
    assert q.take(now=0.0) == ["a1", "a2"]
    assert q.take(now=0.0) == ["b1"]


def test_full_queue_refuses_at_once() -> None:
    q = queue(max_queue_size=2)
    q.put("a", rows=1, key="k", now=0.0)
    q.put("b", rows=1, key="k", now=0.0)
    with pytest.raises(OverloadedError) as caught:
        q.put("c", rows=1, key="k", now=0.0)
    assert caught.value.http_status == 503
    assert caught.value.details == {"queued": 2, "max_queue_size": 2}
    assert len(q) == 2


@pytest.mark.parametrize(
    ("rpc", "expected"),
    [
        ({}, BatchPolicy(max_batch_size=1, max_batch_wait_s=0.0, max_queue_size=1024)),
        (
            {"batching": "true", "max_batch_size": 16, "max_batch_timeout": 5},
            BatchPolicy(max_batch_size=16, max_batch_wait_s=0.005, max_queue_size=1024),
        ),
        (
            {"batching": True, "max_queue_size": "64"},
            BatchPolicy(max_batch_size=32, max_queue_size=64),
        ),
    ],
    ids=["no-batching", "eas-fields", "string-numbers"],
)
def test_policy_from_eas_rpc(rpc: dict[str, object], expected: BatchPolicy) -> None:
    assert BatchPolicy.from_eas(rpc) == expected


@pytest.mark.parametrize(
    "kwargs", [{"max_batch_size": 0}, {"max_batch_wait_s": -1}, {"max_queue_size": 0}], ids=str
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidRequestError):
        BatchPolicy(**kwargs)  # type: ignore[arg-type]


def test_eas_rpc_with_a_non_number_is_named() -> None:
    with pytest.raises(InvalidRequestError, match=r"metadata\.rpc\.max_batch_size"):
        BatchPolicy.from_eas({"batching": "true", "max_batch_size": "lots"})


@given(
    rows=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=40),
    size=st.integers(min_value=1, max_value=16),
)
def test_every_request_comes_out_once_in_order_and_batches_respect_the_size(
    rows: list[int], size: int
) -> None:
    q: BatchQueue[int] = BatchQueue(BatchPolicy(max_batch_size=size, max_queue_size=100))
    for i, r in enumerate(rows):
        q.put(i, rows=r, key="k", now=0.0)
    seen: list[int] = []
    while len(q):
        batch = q.take(now=0.0)
        assert batch
        assert len(batch) == 1 or sum(rows[i] for i in batch) <= size
        seen.extend(batch)
    assert seen == list(range(len(rows)))
