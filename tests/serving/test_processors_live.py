"""ONNX, scikit-learn and custom Python processors behind the live server, detected from
the files (or named with --processor), over the protocols each one speaks."""

from __future__ import annotations

import textwrap
from pathlib import Path

import joblib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from sklearn.linear_model import LogisticRegression

from liqi.datasets.mnist_reader import builtin_dir, read_data_sets
from liqi.protocols import eas
from liqi.serving.server import ProcessorOptions, ServeOptions, build_app
from tests.support.model_server import live_model_server

pytestmark = pytest.mark.timeout(120)


def scaled_sum_onnx(path: Path) -> None:
    """y = sum(x * 2, axis=1) on x [batch, 3] float."""
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["doubled"]),
            helper.make_node("ReduceSum", ["doubled", "axes"], ["y"], keepdims=0),
        ],
        "scaled_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def test_onnx_is_detected_and_served(tmp_path: Path) -> None:
    model = tmp_path / "scaled.onnx"
    scaled_sum_onnx(model)
    options = ServeOptions(uri=str(model), cache_dir=tmp_path, poll_interval_s=0)
    with live_model_server(build_app(options)) as server, server.client() as http:
        rows = {"instances": [[1, 2, 3], [4, 5, 6]]}
        answer = http.post("/v1/models/scaled:predict", json=rows)
        assert answer.json() == {"predictions": [12.0, 30.0]}
        infer = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 1, 1]}]}
        v2 = http.post("/v2/models/scaled/infer", json=infer).json()
        assert v2["outputs"][0]["data"] == [6.0]
        assert v2["model_version"] == "1"
        body = eas.encode_predict_request({"x": np.ones((2, 3), np.float32)})
        protobuf = http.post("/api/predict/scaled", content=body)
        assert eas.decode_predict_response(protobuf.content).outputs["y"].tolist() == [6.0, 6.0]
        wrong = http.post("/v1/models/scaled:predict", json={"instances": [[1, 2]]})
        assert wrong.status_code == 400
        assert "[-1, 3]" in wrong.json()["error"]
        assert http.get("/v2/models/scaled").json()["platform"] == "onnx"
        examples = {"examples": [{"x": [1.0, 2.0, 3.0]}, {"x": [0.5, 0.5, 0.5]}]}
        regress = http.post("/v1/models/scaled:regress", json=examples)
        assert regress.json() == {"results": [12.0, 3.0]}


def test_sklearn_pickle_over_eas_json(tmp_path: Path) -> None:
    train = read_data_sets(str(builtin_dir())).train
    classifier = LogisticRegression(max_iter=200).fit(train.images[:300], train.labels[:300])
    folder = tmp_path / "digits" / "1"
    folder.mkdir(parents=True)
    joblib.dump(classifier, folder / "model.joblib")
    options = ServeOptions(
        uri=str(tmp_path / "digits"),
        cache_dir=tmp_path / "cache",
        poll_interval_s=0,
        processor=ProcessorOptions(name="sklearn"),
    )
    images = train.images[300:310]
    with live_model_server(build_app(options)) as server, server.client() as http:
        answer = http.post("/api/predict/digits", json={"instances": images.tolist()})
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert [row["predictions"] for row in predictions] == classifier.predict(images).tolist()
        np.testing.assert_allclose(
            [row["probabilities"] for row in predictions],
            classifier.predict_proba(images),
            rtol=1e-5,
        )
        narrow = http.post("/api/predict/digits", json={"instances": [[0.0] * 10]})
        assert narrow.status_code == 400
        assert "784" in narrow.text


def test_custom_python_processor_raw_bodies(tmp_path: Path) -> None:
    code = tmp_path / "proc"
    code.mkdir()
    (code / "app.py").write_text(
        textwrap.dedent(
            """
            import allspark

            class Greeter(allspark.BaseProcessor):
                def initialize(self):
                    self.greeting = b"hello "

                def process(self, data):
                    if data == b"crash":
                        raise RuntimeError("asked to crash")
                    if data == b"garbage":
                        return 42
                    return self.greeting + data, 200

            if __name__ == "__main__":
                Greeter(worker_threads=4).run()
            """
        )
    )
    options = ServeOptions(
        uri=str(code),
        cache_dir=tmp_path / "cache",
        name="greeter",
        poll_interval_s=0,
        processor=ProcessorOptions(name="python", path=str(code), entry="app.py"),
    )
    with live_model_server(build_app(options)) as server, server.client() as http:
        answer = http.post("/api/predict/greeter", content=b"world")
        assert answer.status_code == 200
        assert answer.content == b"hello world"
        crash = http.post("/api/predict/greeter", content=b"crash")
        assert crash.status_code == 500
        assert b"RuntimeError: asked to crash" in crash.content
        garbage = http.post("/api/predict/greeter", content=b"garbage")
        assert garbage.status_code == 500
        assert b"expected a tuple" in garbage.content
        assert http.post("/api/predict/greeter", content=b"again").content == b"hello again"
        tensors = http.post("/v1/models/greeter:predict", json={"instances": [1]})
        assert tensors.status_code == 400
        assert "custom processor" in tensors.json()["error"]
        assert http.get("/api/predict/greeter").json() == {"name": "greeter", "processor": "python"}
