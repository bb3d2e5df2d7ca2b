"""BatchRunner: batching under concurrent load, error isolation, overload and timeouts.

The model is a numpy Servable (a fake at the Loader seam) that counts its calls and can be
held busy, so the tests see exactly how requests were grouped. A test holds the model on a
first request, waits until the model has it and the others are queued behind it (no sleeping),
then lets it go.
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
from tests.support.waiting import eventually

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
        self.calls: list[int] = []  # rows of each call that got past the gate
        self.entered = 0  # calls begun, held at the gate or not
        self.gate = threading.Event()
        self.gate.set()

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        self.entered += 1
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


async def hold_the_model(
    model: Doubler, runner: BatchRunner
) -> asyncio.Task[dict[str, np.ndarray]]:
    """Send one request and return once the model is busy with it (held at its gate)."""
    model.gate.clear()
    first = asyncio.create_task(runner.infer(rows(1, 0.0)))
    await eventually(lambda: model.entered == 1, "the model to start on the first request")
    assert runner.queue_depth == 0
    return first


async def test_requests_queued_behind_a_busy_model_share_one_call() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy(max_batch_size=64))
    try:
        first = await hold_the_model(model, runner)
        tasks = [asyncio.create_task(runner.infer(rows(1, i))) for i in range(1, 40)]
        await eventually(lambda: runner.queue_depth == 39, "39 requests queued behind the first")
        assert model.entered == 1  # they wait while the model is busy: no second call yet
        model.gate.set()
        results = [await first, *await asyncio.gather(*tasks)]
    finally:
        runner.stop()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], np.full((1, 3), 2.0 * i))
    assert model.calls == [1, 39]  # the first alone, then everything that queued meanwhile


async def test_a_bad_request_fails_alone() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy(max_batch_size=64))
    try:
        first = await hold_the_model(model, runner)
        good = [asyncio.create_task(runner.infer(rows(2, 3.0))) for _ in range(5)]
        bad = asyncio.create_task(runner.infer(rows(1, -1.0)))
        wrong = asyncio.create_task(runner.infer({"x": np.zeros((1, 4), np.float32)}))
        await eventually(lambda: runner.queue_depth == 7, "7 requests queued behind the first")
        model.gate.set()
        assert (await first)["y"].tolist() == [[0.0] * 3]
        for task in good:
            assert (await task)["y"].tolist() == [[6.0] * 3] * 2
        with pytest.raises(ModelError, match="RuntimeError: boom"):
            await bad
        with pytest.raises(InvalidRequestError, match=r"\[-1, 3\]"):
            await wrong
    finally:
        runner.stop()
    # The bad request was batched with the good ones (11 rows); that call failed, so each of
    # the six ran again alone. The wrong shape never joined them and failed before the model.
    assert model.calls == [1, 11, 2, 2, 2, 2, 2, 1]


async def test_full_queue_refuses_at_once() -> None:
    model = Doubler()
    runner = BatchRunner(model, BatchPolicy(max_batch_size=1, max_queue_size=2))
    try:
        first = await hold_the_model(model, runner)  # the worker holds it: the queue is empty
        queued = [asyncio.create_task(runner.infer(rows(1))) for _ in range(2)]
        await eventually(lambda: runner.queue_depth == 2, "2 requests queued behind the first")
        with pytest.raises(OverloadedError, match="max_queue_size=2"):
            await runner.infer(rows(1))
        model.gate.set()
        assert (await first)["y"].shape == (1, 3)
        for task in queued:
            assert (await task)["y"].shape == (1, 3)
    finally:
        runner.stop()
    assert model.calls == [1, 1, 1]  # the refused request never reached the model


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
