"""SklearnLoader against real scikit-learn models trained on the built-in MNIST sample."""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import BackendUnavailableError, InvalidRequestError, NotFoundError
from liqi.serving.loaders import ModelLoadError, Servable
from liqi.serving.sklearn import SklearnLoader

pytestmark = pytest.mark.timeout(120)


class WidthlessModel:
    """An estimator-like object without n_features_in_: it sums each row."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x).sum(axis=1)


@pytest.fixture(scope="module")
def mnist() -> Any:
    return read_data_sets(str(builtin_dir()))


@pytest.fixture(scope="module")
def classifier(mnist: Any) -> LogisticRegression:
    return LogisticRegression(max_iter=1000).fit(mnist.train.images[:600], mnist.train.labels[:600])


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory, classifier: Any) -> Servable:
    folder = tmp_path_factory.mktemp("sklearn_mnist") / "1"
    folder.mkdir()
    joblib.dump(classifier, folder / "model.joblib")
    return SklearnLoader().load(folder, name="mnist", version=1)


def test_signature(servable: Servable) -> None:
    assert servable.processor == "sklearn"
    sig = servable.signature(None)
    assert sig.name == "serving_default"
    assert list(sig.inputs) == ["inputs"]
    assert sig.inputs["inputs"].shape == (None, 784)
    assert sig.inputs["inputs"].dtype == np.float64
    assert sig.outputs["predictions"].shape == (None,)
    assert sig.outputs["probabilities"].shape == (None, 10)
    assert servable.batchable()


def test_predict_on_the_test_set(servable: Servable, mnist: Any) -> None:
    test = mnist.test
    outputs = servable.predict({"inputs": test.images})  # float32, cast to float64
    assert outputs["predictions"].shape == (1000,)
    assert float((outputs["predictions"] == test.labels).mean()) > 0.7
    probabilities = outputs["probabilities"]
    assert probabilities.shape == (1000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probabilities.argmax(axis=1), outputs["predictions"])
    warm = servable.predict(servable.warmup_inputs())
    assert warm["predictions"].shape == (1,)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"inputs": np.zeros((2, 783))}, "[-1, 784]"),
        ({"inputs": np.zeros(784)}, "'inputs'"),
        ({"pixels": np.zeros((1, 784))}, "received inputs: pixels"),
        ({"inputs": np.full((1, 784), np.nan)}, "NaN"),
    ],
    ids=["wrong-width", "not-rows", "unknown-input", "nan"],
)
def test_bad_inputs_are_named(
    servable: Servable, inputs: dict[str, np.ndarray], message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        servable.predict(inputs)
    assert message in caught.value.message
    assert "'inputs'" in caught.value.message


def test_every_load_warns_about_pickles(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [1.0, 3.0]), tmp_path / "model.joblib")
    with caplog.at_level(logging.WARNING, logger="liqi.serving.sklearn"):
        for version in (1, 2):
            SklearnLoader().load(tmp_path, name="lin", version=version)
    warnings = [r for r in caplog.records if "only serve models you trust" in r.getMessage()]
    assert len(warnings) == 2
    assert "runs code from the pickle" in warnings[0].getMessage()


def test_a_regressor_has_predictions_only(tmp_path: Path) -> None:
    with (tmp_path / "model.pkl").open("wb") as f:
        pickle.dump(LinearRegression().fit([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [1, 2, 3]), f)
    servable = SklearnLoader().load(tmp_path, name="lin", version=1)
    assert list(servable.signature(None).outputs) == ["predictions"]
    result = servable.predict({"inputs": np.array([[2, 2]])})  # int64, cast to float64
    np.testing.assert_allclose(result["predictions"], [6.0])


def test_string_labels_come_back_as_bytes(tmp_path: Path) -> None:
    model = LogisticRegression().fit([[0.0], [0.1], [1.0], [1.1]], ["cat", "cat", "dog", "dog"])
    joblib.dump(model, tmp_path / "pets.pickle")
    servable = SklearnLoader().load(tmp_path / "pets.pickle", name="pets", version=1)
    assert servable.signature(None).outputs["predictions"].dtype == np.dtype(object)
    result = servable.predict({"inputs": np.array([[0.0], [1.2]])})
    assert result["predictions"].tolist() == [b"cat", b"dog"]


def test_feature_columns_by_name(tmp_path: Path) -> None:
    """What a DataFrame fit leaves (feature_names_in_), without needing pandas here."""
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 3)
    model = LogisticRegression().fit(x, (x[:, 0] > 0.5).astype(int))
    model.feature_names_in_ = np.array(["fea1", "fea2"], dtype=object)
    joblib.dump(model, tmp_path / "model.joblib")
    servable = SklearnLoader().load(tmp_path, name="eas", version=1)

    # [{"fea1": 1, "fea2": 0}, {"fea1": 0, "fea2": 1}] decodes to one column per name.
    by_name = servable.predict({"fea2": np.array([0, 1]), "fea1": np.array([1, 0])})
    by_rows = servable.predict({"inputs": np.array([[1.0, 0.0], [0.0, 1.0]])})
    assert by_name["predictions"].tolist() == [1, 0]
    np.testing.assert_array_equal(by_name["probabilities"], by_rows["probabilities"])

    with pytest.raises(InvalidRequestError, match="missing: fea2"):
        servable.predict({"fea1": np.array([1.0])})
    with pytest.raises(InvalidRequestError, match="one length"):
        servable.predict({"fea1": np.array([1.0]), "fea2": np.array([1.0, 2.0])})
    with pytest.raises(InvalidRequestError, match="or the feature columns fea1, fea2"):
        servable.predict({"other": np.array([1.0])})


def test_a_dataframe_fitted_model(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"age": [20.0, 30, 40, 50, 60, 70], "income": [1.0, 2, 1, 3, 2, 3]})
    model = LogisticRegression().fit(frame, [0, 0, 0, 1, 1, 1])
    joblib.dump(model, tmp_path / "model.joblib")
    servable = SklearnLoader().load(tmp_path, name="df", version=1)
    result = servable.predict({"age": np.array([25.0, 65.0]), "income": np.array([1.0, 3.0])})
    assert (
        result["predictions"].tolist()
        == model.predict(pd.DataFrame({"age": [25.0, 65.0], "income": [1.0, 3.0]})).tolist()
    )


def test_a_model_without_n_features_in(tmp_path: Path) -> None:
    joblib.dump(WidthlessModel(), tmp_path / "model.joblib")
    servable = SklearnLoader().load(tmp_path, name="w", version=1)
    assert servable.signature(None).inputs["inputs"].shape == (None, None)
    result = servable.predict({"inputs": np.array([[1.0, 2.0, 3.0]])})
    assert result["predictions"].tolist() == [6.0]


def test_an_object_without_predict(tmp_path: Path) -> None:
    joblib.dump({"weights": [1, 2, 3]}, tmp_path / "model.joblib")
    with pytest.raises(ModelLoadError) as caught:
        SklearnLoader().load(tmp_path, name="d", version=1)
    assert "dict" in caught.value.message
    assert "no predict" in caught.value.message


def test_which_file_is_loaded(tmp_path: Path) -> None:
    joblib.dump(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), tmp_path / "model.pkl")
    joblib.dump(WidthlessModel(), tmp_path / "other.joblib")
    servable = SklearnLoader().load(tmp_path, name="m", version=1)
    assert servable.signature(None).inputs["inputs"].shape == (None, 1)


def test_several_pickles_in_a_folder(tmp_path: Path) -> None:
    joblib.dump(WidthlessModel(), tmp_path / "a.pkl")
    joblib.dump(WidthlessModel(), tmp_path / "b.joblib")
    with pytest.raises(ModelLoadError) as caught:
        SklearnLoader().load(tmp_path, name="m", version=1)
    assert "a.pkl, b.joblib" in caught.value.message


def test_a_folder_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(NotFoundError) as caught:
        SklearnLoader().load(tmp_path, name="m", version=1)
    assert str(tmp_path) in caught.value.message
    assert "model.joblib" in caught.value.message


def test_a_corrupt_pickle(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"definitely not a pickle")
    with pytest.raises(ModelLoadError) as caught:
        SklearnLoader().load(tmp_path, name="m", version=4)
    assert "'m' version 4" in caught.value.message
    assert "model.pkl" in caught.value.message


def test_scikit_learn_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    joblib.dump(WidthlessModel(), tmp_path / "model.joblib")
    monkeypatch.setitem(sys.modules, "joblib", None)  # makes `import` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'liqi\[sklearn\]'"):
        SklearnLoader().load(tmp_path, name="m", version=1)
