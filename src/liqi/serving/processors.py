"""Processor names: which loader serves a model, by EAS name or by the files in its folder.

EAS names its processors after the framework and build (``tensorflow_cpu_1.15``,
``onnx_cu100``); liqi has one loader per framework: ``tensorflow``, ``onnx``, ``sklearn`` and
``python`` (custom processors).
"""

from __future__ import annotations

import re
from pathlib import Path

from liqi.errors import InvalidRequestError, NotFoundError
from liqi.serving.custom import PythonProcessorLoader
from liqi.serving.loaders import SAVED_MODEL_FILES, Loader, SavedModelLoader
from liqi.serving.onnx import OnnxLoader
from liqi.serving.sklearn import SUFFIXES as PICKLE_SUFFIXES, SklearnLoader

__all__ = ["PROCESSORS", "detect", "make_loader", "normalize"]

PROCESSORS = ("tensorflow", "onnx", "sklearn", "python")

_NAMES = (
    (re.compile(r"tensorflow(_(cpu|gpu)(_.+)?)?"), "tensorflow"),
    (re.compile(r"onnx(_.+)?"), "onnx"),
    (re.compile(r"sklearn|scikit[-_]learn"), "sklearn"),
    (re.compile(r"python"), "python"),
)
_SERVED = (
    "tensorflow (also tensorflow_cpu, tensorflow_cpu_1.x, tensorflow_cpu_<version>, "
    "tensorflow_gpu_*), onnx (onnx_*), sklearn (scikit-learn), python (custom processors)"
)
_LISTED = 10


def normalize(name: str) -> str:
    """The liqi processor for an EAS processor name: ``tensorflow_cpu_1.15`` -> ``tensorflow``."""
    key = name.strip().lower()
    for pattern, processor in _NAMES:
        if pattern.fullmatch(key):
            return processor
    raise InvalidRequestError(
        f"liqi does not serve the processor {name!r}. It serves: {_SERVED}. Convert the model "
        "to one of these (e.g. ONNX), or serve it with a python processor."
    )


def detect(path: Path) -> str:
    """The processor for the model in ``path`` (a file, a version folder, or a folder of
    numbered versions, where the highest decides)."""
    if not path.exists():
        raise NotFoundError(f"No model at {path}: the path does not exist.")
    if path.is_file():
        found = _by_file(path.name)
        if found == "tensorflow":
            raise InvalidRequestError(
                f"{path} is part of a SavedModel: pass its folder, {path.parent}, instead."
            )
        if found is None:
            raise InvalidRequestError(
                f"Cannot tell which processor serves {path}: it is not a .onnx, .joblib, .pkl "
                "or .pickle file. Pass --processor (tensorflow, onnx, sklearn or python)."
            )
        return found
    files = sorted(p.name for p in path.iterdir() if p.is_file())
    if any(name in files for name in SAVED_MODEL_FILES):
        return "tensorflow"
    for wanted in ("onnx", "sklearn"):
        if any(_by_file(name) == wanted for name in files):
            return wanted
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    if versions:
        return detect(max(versions, key=lambda p: int(p.name)))
    shown = ", ".join(files[:_LISTED]) or "none"
    more = f" (and {len(files) - _LISTED} more)" if len(files) > _LISTED else ""
    raise InvalidRequestError(
        f"Cannot tell which processor serves {path}: no saved_model.pb, *.onnx, *.joblib, "
        f"*.pkl or *.pickle there. Files found: {shown}{more}. Pass --processor "
        "(tensorflow, onnx, sklearn or python)."
    )


def _by_file(name: str) -> str | None:
    if name in SAVED_MODEL_FILES:
        return "tensorflow"
    if name.endswith(".onnx"):
        return "onnx"
    if name.endswith(PICKLE_SUFFIXES):
        return "sklearn"
    return None


def make_loader(
    processor: str,
    *,
    processor_path: str | None = None,
    processor_entry: str | None = None,
    worker_threads: int | None = None,
) -> Loader:
    """The loader for ``processor`` (a liqi or an EAS name)."""
    kind = normalize(processor)
    if kind == "tensorflow":
        return SavedModelLoader()
    if kind == "onnx":
        return OnnxLoader()
    if kind == "sklearn":
        return SklearnLoader()
    return PythonProcessorLoader(
        processor_path=processor_path,
        processor_entry=processor_entry,
        worker_threads=worker_threads,
    )
