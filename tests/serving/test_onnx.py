"""OnnxLoader against real ONNX models built with the onnx helper API, run by onnxruntime."""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.errors import BackendUnavailableError, InvalidRequestError, NotFoundError
from liqi.serving.loaders import ModelLoadError, Servable
from liqi.serving.onnx import OnnxLoader

pytestmark = pytest.mark.timeout(120)


def _save(graph: Any, path: Path, *, check: bool = True) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if check:
        onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def _softmax_graph(weights: np.ndarray, bias: np.ndarray) -> Any:
    """scores = softmax(x @ W + b), classes = argmax(scores); x is [batch, 784] float."""
    return helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["logits_raw"]),
            helper.make_node("Add", ["logits_raw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
            helper.make_node("ArgMax", ["scores"], ["classes"], axis=1, keepdims=0),
        ],
        "mnist_softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 784])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("classes", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor("W", TensorProto.FLOAT, [784, 10], weights.ravel().tolist()),
            helper.make_tensor("b", TensorProto.FLOAT, [10], bias.tolist()),
        ],
    )


@pytest.fixture(scope="module")
def mnist() -> Any:
    return read_data_sets(str(builtin_dir()))


@pytest.fixture(scope="module")
def weights(mnist: Any) -> tuple[np.ndarray, np.ndarray]:
    """A linear classifier fitted by ridge regression on one-hot labels (closed form)."""
    train = mnist.train
    x = np.hstack([train.images[:2000].astype(np.float64), np.ones((2000, 1))])
    y = np.eye(10)[train.labels[:2000]]
    solution = np.linalg.solve(x.T @ x + 1.0 * np.eye(785), x.T @ y)
    return solution[:784].astype(np.float32), solution[784].astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(
    tmp_path_factory: pytest.TempPathFactory, weights: tuple[np.ndarray, np.ndarray]
) -> Path:
    folder = tmp_path_factory.mktemp("onnx_mnist") / "1"
    _save(_softmax_graph(*weights), folder / "model.onnx")
    return folder


@pytest.fixture(scope="module")
def servable(model_dir: Path) -> Servable:
    return OnnxLoader().load(model_dir, name="mnist", version=1)


def test_signature_is_read_from_the_graph(servable: Servable) -> None:
    assert servable.processor == "onnx"
    assert list(servable.signatures) == ["serving_default"]
    sig = servable.signature(None)
    assert sig.inputs["x"].shape == (None, 784)
    assert sig.inputs["x"].dtype == np.float32
    assert sig.outputs["scores"].shape == (None, 10)
    assert sig.outputs["classes"].shape == (None,)
    assert sig.outputs["classes"].dtype == np.int64
    assert servable.batchable()
    assert servable.load_time_s >= 0


def test_predict_on_the_test_set(
    servable: Servable, mnist: Any, weights: tuple[np.ndarray, np.ndarray]
) -> None:
    test = mnist.test
    outputs = servable.predict({"x": test.images})
    scores, classes = outputs["scores"], outputs["classes"]
    assert scores.shape == (1000, 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    logits = test.images @ weights[0] + weights[1]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(scores, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_array_equal(classes, scores.argmax(axis=1))
    assert float((classes == test.labels).mean()) > 0.7


def test_inputs_are_cast_and_warmup_runs(servable: Servable) -> None:
    assert servable.predict({"x": np.zeros((2, 784), np.float64)})["scores"].shape == (2, 10)
    warm = servable.predict(servable.warmup_inputs())
    assert warm["scores"].shape == (1, 10)


def test_concurrent_predicts_share_the_session(servable: Servable, mnist: Any) -> None:
    images = mnist.test.images[:64]
    expected = servable.predict({"x": images})["scores"]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: servable.predict({"x": images})["scores"], range(32)))
    for scores in results:
        np.testing.assert_array_equal(scores, expected)


@pytest.mark.parametrize(
    ("inputs", "signature", "message"),
    [
        ({"x": np.zeros((2, 783), np.float32)}, None, "[-1, 784]"),
        ({"pixels": np.zeros((1, 784), np.float32)}, None, "unknown: pixels"),
        ({}, None, "missing: x"),
        ({"x": np.zeros((1, 784), np.float32)}, "classify", "Available signatures: serving"),
        ({"x": np.array([["a"] * 784], dtype=object)}, None, "'x'"),
    ],
    ids=["wrong-shape", "unknown-input", "missing-input", "unknown-signature", "wrong-dtype"],
)
def test_bad_inputs_are_named(
    servable: Servable, inputs: dict[str, np.ndarray], signature: str | None, message: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        servable.predict(inputs, signature)
    assert message in caught.value.message


def test_string_int64_and_bool_tensors(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["words"], ["echo"]),
            helper.make_node("Mul", ["ids", "ids"], ["squares"]),
            helper.make_node("Not", ["flags"], ["negated"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("words", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 2]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["batch"]),
        ],
        [
            helper.make_tensor_value_info("echo", TensorProto.STRING, [None]),
            helper.make_tensor_value_info("squares", TensorProto.INT64, ["batch", 2]),
            helper.make_tensor_value_info("negated", TensorProto.BOOL, ["batch"]),
        ],
    )
    servable = OnnxLoader().load(_save(graph, tmp_path / "mixed.onnx"), name="m", version=2)
    sig = servable.signature(None)
    assert sig.inputs["words"].dtype == np.dtype(object)
    assert sig.inputs["ids"].dtype == np.int64
    assert sig.inputs["flags"].dtype == np.bool_
    assert sig.inputs["words"].shape == (None,)

    outputs = servable.predict(
        {
            "words": np.array(["héllo".encode(), b"x"], dtype=object),
            "ids": np.array([[1, 2], [3, 4]], dtype=np.int32),
            "flags": np.array([True, False]),
        }
    )
    assert outputs["echo"].tolist() == ["héllo".encode(), b"x"]
    assert outputs["squares"].tolist() == [[1, 4], [9, 16]]
    assert outputs["squares"].dtype == np.int64
    assert outputs["negated"].tolist() == [False, True]
    warm = servable.predict(servable.warmup_inputs())
    assert warm["echo"].tolist() == [b""]

    with pytest.raises(InvalidRequestError, match=r"'words'.*UTF-8"):
        servable.predict(
            {
                "words": np.array([b"\xff"], dtype=object),
                "ids": np.zeros((1, 2), np.int64),
                "flags": np.array([True]),
            }
        )


def test_non_tensor_outputs_are_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["y"]),
            helper.make_node("SequenceConstruct", ["y"], ["as_sequence"]),
        ],
        "with_sequence",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_sequence_value_info("as_sequence", TensorProto.FLOAT, None),
        ],
    )
    model_file = _save(graph, tmp_path / "1" / "model.onnx")
    with caplog.at_level(logging.WARNING, logger="liqi.serving.onnx"):
        servable = OnnxLoader().load(model_file.parent, name="seq", version=1)
    assert list(servable.signature(None).outputs) == ["y"]
    assert "as_sequence" in caplog.text
    result = servable.predict({"x": np.array([[-1.0, 0.0, 2.0]], np.float32)})
    assert result["y"].tolist() == [[0.0, 0.0, 2.0]]


def test_an_input_without_shape_is_unknown(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "shapeless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    graph.input[0].type.tensor_type.ClearField("shape")
    graph.output[0].type.tensor_type.ClearField("shape")
    servable = OnnxLoader().load(
        _save(graph, tmp_path / "model.onnx", check=False), name="s", version=1
    )
    assert servable.signature(None).inputs["x"].shape is None
    assert not servable.batchable()
    result = servable.predict({"x": np.array([[[-1.0, 3.0]]], np.float32)})
    assert result["y"].tolist() == [[[0.0, 3.0]]]


def _tiny(path: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    return _save(graph, path)


def test_which_file_is_loaded(tmp_path: Path) -> None:
    _tiny(tmp_path / "a" / "model.onnx")
    _tiny(tmp_path / "a" / "other.onnx")
    _tiny(tmp_path / "b" / "exported.onnx")
    loader = OnnxLoader()
    for path in (tmp_path / "a", tmp_path / "b", tmp_path / "a" / "other.onnx"):
        servable = loader.load(path, name="t", version=1)
        assert servable.predict({"x": np.array([1.5], np.float32)})["y"].tolist() == [1.5]


def test_several_models_in_a_folder(tmp_path: Path) -> None:
    _tiny(tmp_path / "first.onnx")
    _tiny(tmp_path / "second.onnx")
    with pytest.raises(ModelLoadError) as caught:
        OnnxLoader().load(tmp_path, name="t", version=1)
    assert "first.onnx, second.onnx" in caught.value.message


def test_a_folder_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("no model here")
    with pytest.raises(NotFoundError) as caught:
        OnnxLoader().load(tmp_path, name="t", version=1)
    assert str(tmp_path) in caught.value.message
    assert "model.onnx" in caught.value.message


def test_a_corrupt_model(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelLoadError) as caught:
        OnnxLoader().load(tmp_path, name="m", version=3)
    assert "'m' version 3" in caught.value.message
    assert "protobuf" in caught.value.message.lower()


def test_onnxruntime_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny(tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"pip install 'liqi\[onnx\]'"):
        OnnxLoader().load(tmp_path, name="m", version=1)
