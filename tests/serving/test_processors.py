"""Processor names: EAS names -> liqi loaders, and detection from a model's files."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from liqi.errors import InvalidRequestError, NotFoundError
from liqi.serving.custom import PythonProcessorLoader
from liqi.serving.loaders import SavedModelLoader
from liqi.serving.onnx import OnnxLoader
from liqi.serving.processors import detect, make_loader, normalize
from liqi.serving.sklearn import SklearnLoader

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tensorflow", "tensorflow"),
        ("tensorflow_cpu", "tensorflow"),
        ("tensorflow_cpu_1.x", "tensorflow"),
        ("tensorflow_cpu_1.12", "tensorflow"),
        ("tensorflow_cpu_1.14", "tensorflow"),
        ("tensorflow_cpu_1.15", "tensorflow"),
        ("tensorflow_cpu_2.3", "tensorflow"),
        ("tensorflow_cpu_2.4", "tensorflow"),
        ("tensorflow_cpu_2.7", "tensorflow"),
        ("tensorflow_gpu_1.15", "tensorflow"),
        ("tensorflow_gpu_2.4_cu110", "tensorflow"),
        ("onnx", "onnx"),
        ("onnx_cu100", "onnx"),
        ("sklearn", "sklearn"),
        ("scikit-learn", "sklearn"),
        ("python", "python"),
        (" Python ", "python"),
    ],
)
def test_eas_names(name: str, expected: str) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize("name", ["pmml", "pytorch_cpu_1.6", "caffe_cpu", "tensorflowx", ""])
def test_names_liqi_does_not_serve(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        normalize(name)
    message = caught.value.message
    assert repr(name) in message
    for served in ("tensorflow", "onnx", "sklearn", "python"):
        assert served in message


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["saved_model.pb", "variables/variables.index"], "tensorflow"),
        (["saved_model.pbtxt"], "tensorflow"),
        (["model.onnx"], "onnx"),
        (["resnet.onnx", "labels.txt"], "onnx"),
        (["model.joblib"], "sklearn"),
        (["clf.pkl"], "sklearn"),
        (["clf.pickle"], "sklearn"),
    ],
)
def test_detect_a_version_folder(tmp_path: Path, files: list[str], expected: str) -> None:
    for name in files:
        _touch(tmp_path / name)
    assert detect(tmp_path) == expected


@pytest.mark.parametrize(
    ("name", "expected"), [("m.onnx", "onnx"), ("m.joblib", "sklearn"), ("m.pkl", "sklearn")]
)
def test_detect_a_file(tmp_path: Path, name: str, expected: str) -> None:
    assert detect(_touch(tmp_path / name)) == expected


def test_detect_the_highest_numbered_version(tmp_path: Path) -> None:
    _touch(tmp_path / "2" / "model.pkl")
    _touch(tmp_path / "10" / "model.onnx")  # 10 > 2, though "10" < "2" as text
    _touch(tmp_path / "latest" / "saved_model.pb")
    assert detect(tmp_path) == "onnx"


def test_detect_gives_up_with_the_files_found(tmp_path: Path) -> None:
    for i in range(12):
        _touch(tmp_path / f"file{i:02d}.bin")
    with pytest.raises(InvalidRequestError) as caught:
        detect(tmp_path)
    message = caught.value.message
    assert str(tmp_path) in message
    assert "file00.bin" in message
    assert "file09.bin" in message
    assert "file10.bin" not in message
    assert "and 2 more" in message
    assert "--processor" in message


def test_detect_refuses_unknown_and_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="--processor"):
        detect(_touch(tmp_path / "model.h5"))
    with pytest.raises(InvalidRequestError, match="pass its folder"):
        detect(_touch(tmp_path / "export" / "saved_model.pb"))
    with pytest.raises(NotFoundError, match="does not exist"):
        detect(tmp_path / "nowhere")


def test_make_loader() -> None:
    assert isinstance(make_loader("tensorflow"), SavedModelLoader)
    assert isinstance(make_loader("tensorflow_cpu_1.15"), SavedModelLoader)
    assert isinstance(make_loader("onnx"), OnnxLoader)
    assert isinstance(make_loader("sklearn"), SklearnLoader)
    loader = make_loader(
        "python", processor_path="/srv/proc", processor_entry="app.py:Mine", worker_threads=4
    )
    assert isinstance(loader, PythonProcessorLoader)
    assert (loader.entry_file, loader.class_name, loader.worker_threads) == ("app.py", "Mine", 4)
    with pytest.raises(InvalidRequestError, match="--processor-entry"):
        make_loader("python", processor_path="/srv/proc")
    with pytest.raises(InvalidRequestError, match="'pmml'"):
        make_loader("pmml")


def test_detected_loader_serves_the_model(tmp_path: Path) -> None:
    x = np.array([[0.0], [0.2], [0.8], [1.0]])
    version = tmp_path / "3"
    version.mkdir()
    joblib.dump(LogisticRegression().fit(x, [0, 0, 1, 1]), version / "model.joblib")
    servable = make_loader(detect(tmp_path)).load(version, name="m", version=3)
    assert servable.processor == "sklearn"
    result = servable.predict({"inputs": np.array([[0.1], [0.9]])})
    assert result["predictions"].tolist() == [0, 1]
