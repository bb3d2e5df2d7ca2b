"""ModelManager: version policy, swaps, failed loads and draining, with a numpy Loader (a
fake at the Loader seam) over real folders."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from liqi.core.version_policy import VersionPolicy
from liqi.errors import ModelLoadError, ModelUnavailableError, NotFoundError
from liqi.protocols.tensors import TensorSpec
from liqi.serving.loaders import Loader, Servable, Signature
from liqi.serving.manager import ModelManager, ModelOptions, ServedModel, VersionState
from liqi.serving.source import LocalSource
from tests.support.waiting import eventually

pytestmark = [pytest.mark.timeout(30), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Scaler(Servable):
    """y = x * factor, the factor read from the version's folder."""

    def __init__(self, version: int, factor: float) -> None:
        self.name, self.version, self.load_time_s = "scaler", version, 0.0
        spec = TensorSpec("x", np.dtype(np.float32), (None,))
        self.signatures = {"serving_default": Signature("serving_default", {"x": spec}, {})}
        self.default_signature = "serving_default"
        self.factor = factor
        self.closed = False

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        return {"y": np.asarray(inputs["x"], np.float32) * self.factor}

    def close(self) -> None:
        self.closed = True


class FactorLoader(Loader):
    def __init__(self) -> None:
        self.loaded: list[Scaler] = []

    def load(self, path: Path, *, name: str, version: int) -> Servable:
        text = (path / "factor.txt").read_text()
        if text == "broken":
            raise ModelLoadError(f"version {version} is broken")
        servable = Scaler(version, float(text))
        self.loaded.append(servable)
        return servable


def add_version(root: Path, version: int, factor: str) -> None:
    folder = root / str(version)
    folder.mkdir()
    (folder / "factor.txt").write_text(factor)


def model_at(root: Path, loader: FactorLoader, policy: str = "latest") -> ServedModel:
    options = ModelOptions(policy=VersionPolicy.parse(policy))
    return ServedModel("scaler", LocalSource(root), lambda path: loader, options)


async def predict(model: ServedModel, version: str | None = None) -> float:
    with model.acquire(version) as entry:
        _, runner = entry.loaded(model.name)
        return float((await runner.infer({"x": np.ones(1, np.float32)}))["y"][0])


async def test_latest_version_serves_and_the_old_one_unloads(tmp_path: Path) -> None:
    add_version(tmp_path, 1, "1")
    loader = FactorLoader()
    model = model_at(tmp_path, loader)
    with pytest.raises(ModelUnavailableError, match="has no versions"):
        model.resolve()
    await model.refresh()
    assert model.ready
    assert await predict(model) == 1.0
    add_version(tmp_path, 2, "2")
    await model.refresh()
    assert await predict(model) == 2.0
    assert model.versions[1].state is VersionState.END
    assert loader.loaded[0].closed
    with pytest.raises(NotFoundError, match="Available versions: 2"):
        model.resolve("1")
    await model.close()


async def test_a_broken_version_keeps_the_old_one_and_is_retried_later(tmp_path: Path) -> None:
    add_version(tmp_path, 1, "1")
    add_version(tmp_path, 2, "broken")
    now = [0.0]
    loader = FactorLoader()
    model = ServedModel(
        "scaler", LocalSource(tmp_path), lambda path: loader, ModelOptions(), clock=lambda: now[0]
    )
    await model.refresh()
    assert model.versions[2].state is VersionState.FAILED
    assert model.versions[2].error == "version 2 is broken"
    assert await predict(model) == 1.0  # the newest healthy version serves
    (tmp_path / "2" / "factor.txt").write_text("5")
    await model.refresh()  # still inside the backoff: not retried
    assert model.versions[2].state is VersionState.FAILED
    now[0] = 10.0
    await model.refresh()
    assert model.versions[2].state is VersionState.AVAILABLE
    assert await predict(model) == 5.0
    assert model.versions[1].state is VersionState.END
    await model.close()


async def test_nothing_loads_then_readyz_says_why(tmp_path: Path) -> None:
    add_version(tmp_path, 1, "broken")
    model = model_at(tmp_path, FactorLoader())
    manager = ModelManager([model], poll_interval_s=0)
    await model.refresh()
    assert not manager.ready
    assert manager.not_ready_reasons() == [
        "Model 'scaler' has no version ready: version 1 failed to load: version 1 is broken"
    ]


async def test_unload_waits_for_requests_in_flight(tmp_path: Path) -> None:
    add_version(tmp_path, 1, "1")
    loader = FactorLoader()
    model = model_at(tmp_path, loader)
    await model.refresh()
    held = model.acquire()
    held.__enter__()
    add_version(tmp_path, 2, "2")
    swap = asyncio.create_task(model.refresh())
    await eventually(
        lambda: held.state is not VersionState.AVAILABLE, "version 1 to stop taking requests"
    )
    assert held.state is VersionState.UNLOADING
    assert model.resolve().version == 2  # new requests go to version 2 already
    # Version 1 still answers the request it holds; it is neither stopped nor closed, and the
    # swap cannot finish, until that request lets go.
    _, runner = held.loaded(model.name)
    assert (await runner.infer({"x": np.ones(1, np.float32)}))["y"][0] == 1.0
    assert held.state is VersionState.UNLOADING
    assert not loader.loaded[0].closed
    assert not swap.done()
    held.__exit__(None, None, None)
    await asyncio.wait_for(swap, 5)
    assert held.state is VersionState.END
    assert loader.loaded[0].closed
    await model.close()


async def test_all_versions_and_specific_ones(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        add_version(tmp_path, version, str(version))
    model = model_at(tmp_path, FactorLoader(), "all")
    await model.refresh()
    assert [v.version for v in model.available()] == [1, 2, 3]
    assert await predict(model, "2") == 2.0
    await model.close()
    pinned = model_at(tmp_path, FactorLoader(), "1,3")
    await pinned.refresh()
    assert [v.version for v in pinned.available()] == [1, 3]
    await pinned.close()
