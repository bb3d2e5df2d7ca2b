"""BatchRunner: batching under concurrent load, error isolation, overload and timeouts.

The model is a numpy Servable (a fake at the Loader seam) that counts its calls and can be
held busy, so the tests see exactly how requests were grouped.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping

import numpy as np
import pytest

from liqi.core.batching import BatchPolicy
from liqi.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    ModelError,
    ModelUnavailableError,
    OverloadedError,
)
from liqi.protocols.tensors import TensorSpec, conform_inputs
from liqi.serving.loaders import RawServable, Servable, Signature
from liqi.serving.runner import BatchRunner

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Doubler(Servable):
    """y = 2x on [-1, 3] float32; x[0, 0] == -1 makes the model itself raise."""

    def __init__(self) -> None:
        self.name, self.version, self.load_time_s = "doubler", 1, 0.0
        spec = TensorSpec("x", np.dtype(np.float32), (None, 3))
        self.signatures = {"serving_default": Signature("serving_default", {"x": spec}, {})}
        self.default_signature = "serving_default"
        self.calls: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        self.gate.wait(10)
        x = conform_inputs(inputs, self.signature(signature).inputs)["x"]
        self.calls.append(len(x))
        if (x == -1).any():
            raise RuntimeError("boom")
        return {"y": x * 2}


class Echo(RawServable):
    def __init__(self) -> None:
        self.name, self.version, self.load_time_s = "echo", 1, 0.0
        self.signatures, self.default_signature = {}, ""

    def process(self, data: bytes) -> tuple[bytes, int]:
        return data.upper(), 201


def rows(n: int, value: float = 1.0) -> dict[str, np.ndarray]:
    return {"x": np.full((n, 3), value, dtype=np.float32)}


async def test_concurrent_requests_share_model_calls() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy(max_batch_size=64))
    try:
        model.gate.clear()  # hold the first call so the rest queue up behind it
        tasks = [asyncio.create_task(runner.infer(rows(1, i))) for i in range(40)]
        await asyncio.sleep(0.05)
        model.gate.set()
        results = await asyncio.gather(*tasks)
    finally:
        runner.stop()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 3), 2.0 * i))
    assert sum(model.calls) == 40
    assert len(model.calls) < 40  # batched: fewer model calls than requests
    assert max(model.calls) > 1


async def test_a_bad_request_fails_alone() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy(max_batch_size=64))
    try:
        model.gate.clear()
        good = [asyncio.create_task(runner.infer(rows(2, 3.0))) for _ in range(5)]
        bad = asyncio.create_task(runner.infer(rows(1, -1.0)))
        wrong = asyncio.create_task(runner.infer({"x": np.zeros((1, 4), np.float32)}))
        await asyncio.sleep(0.05)
        model.gate.set()
        for task in good:
            assert (await task)["y"].tolist() == [[6.0] * 3] * 2
        with pytest.raises(ModelError, match="RuntimeError: boom"):
            await bad
        with pytest.raises(InvalidRequestError, match=r"\[-1, 3\]"):
            await wrong
    finally:
        runner.stop()


async def test_full_queue_refuses_at_once() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy(max_batch_size=1, max_queue_size=2))
    try:
        model.gate.clear()
        first = asyncio.create_task(runner.infer(rows(1)))
        await asyncio.sleep(0.05)  # the worker holds it: the queue is empty again
        queued = [asyncio.create_task(runner.infer(rows(1))) for _ in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError, match="max_queue_size=2"):
            await runner.infer(rows(1))
        model.gate.set()
        assert (await first)["y"].shape == (1, 3)
        for task in queued:
            assert (await task)["y"].shape == (1, 3)
    finally:
        runner.stop()


async def test_timeout_answers_and_the_runner_goes_on() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy())
    try:
        model.gate.clear()
        with pytest.raises(DeadlineExceededError, match=r"within 0\.05 s"):
            await runner.infer(rows(1), timeout_s=0.05)
        model.gate.set()
        assert (await runner.infer(rows(1, 4.0)))["y"][0, 0] == 8.0
    finally:
        runner.stop()


async def test_raw_processor_and_stop() -> None:
    runner = BatchRunner(Echo(), BatchPolicy(), workers=3)
    results = await asyncio.gather(*(runner.process(b"abc%d" % i) for i in range(10)))
    assert results == [(b"ABC%d" % i, 201) for i in range(10)]
    runner.stop()
    with pytest.raises(ModelUnavailableError, match="unloading"):
        await runner.process(b"late")
