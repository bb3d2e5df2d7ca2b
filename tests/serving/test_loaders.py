"""SavedModelLoader against a real SavedModel exported by the MNIST example."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import InvalidRequestError, NotFoundError
from liqi.serving.loaders import ModelLoadError, SavedModelLoader, Servable

pytestmark = [pytest.mark.tf, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def servable(mnist_saved_model: Path) -> Servable:
    return SavedModelLoader().load(mnist_saved_model, name="mnist", version=1)


def test_signatures_are_read_from_the_model(servable: Servable) -> None:
    assert set(servable.signatures) == {"predict_images", "serving_default"}
    assert servable.default_signature == "serving_default"
    sig = servable.signature("predict_images")
    assert sig.inputs["images"].shape == (None, 784)
    assert sig.inputs["images"].dtype == np.float32
    assert sig.outputs["scores"].shape == (None, 10)
    assert servable.load_time_s > 0


def test_predict_on_the_test_set(servable: Servable) -> None:
    test = read_data_sets(str(builtin_dir())).test
    scores = servable.predict({"images": test.images}, "predict_images")["scores"]
    assert scores.shape == (1000, 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-4)
    accuracy = float((scores.argmax(axis=1) == test.labels).mean())
    assert accuracy >= 0.85


def test_inputs_are_cast_to_the_signature(servable: Servable) -> None:
    images = np.zeros((2, 784), dtype=np.float64)
    assert servable.predict({"images": images})["scores"].shape == (2, 10)


@pytest.mark.parametrize(
    ("inputs", "signature", "message"),
    [
        ({"images": np.zeros((2, 783), np.float32)}, None, "[-1, 784]"),
        ({"pixels": np.zeros((1, 784), np.float32)}, None, "unknown: pixels"),
        (
            {"images": np.zeros((1, 784), np.float32)},
            "classify",
            "Available signatures: predict_images, serving_default",
        ),
        ({"images": np.array([["a"] * 784], dtype=object)}, None, "images"),
    ],
    ids=["wrong-shape", "unknown-input", "unknown-signature", "wrong-dtype"],
)
def test_bad_inputs_are_named(
    servable: Servable, inputs: dict[str, np.ndarray], signature: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        servable.predict(inputs, signature)
    assert message in caught.value.message


def test_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="No SavedModel"):
        SavedModelLoader().load(tmp_path, name="m", version=1)


def test_a_corrupt_model(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError) as caught:
        SavedModelLoader().load(tmp_path, name="m", version=3)
    assert "'m' version 3" in caught.value.message
