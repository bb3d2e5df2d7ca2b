"""ONNX models on onnxruntime: a ``.onnx`` file (or a folder holding one) -> a Servable.

The model's graph inputs and outputs become one signature, ``serving_default``. onnxruntime is
imported when a model is loaded, never at import time. ``InferenceSession.run`` is thread-safe,
so several workers may share one session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from liqi.errors import InvalidRequestError, ModelLoadError, NotFoundError
from liqi.protocols.tensors import TensorSpec
from liqi.serving.loaders import Loader, Servable, Signature, optional_module

__all__ = ["OnnxLoader", "OnnxServable"]

log = logging.getLogger(__name__)

DEFAULT_FILE = "model.onnx"

# onnxruntime's type strings -> numpy dtypes; object stands for strings (bytes on our side).
_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(string)": np.dtype(object),
}


def _ort() -> Any:
    return optional_module("onnxruntime", "an ONNX model", "onnx")


def find_model_file(path: Path) -> Path:
    """The ``.onnx`` file ``path`` names or holds (``model.onnx`` first)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise NotFoundError(f"No ONNX model at {path}: the path does not exist.")
    preferred = path / DEFAULT_FILE
    if preferred.is_file():
        return preferred
    found = sorted(p for p in path.glob("*.onnx") if p.is_file())
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFoundError(
            f"No ONNX model in {path}: expected {DEFAULT_FILE} (or a single *.onnx file) there."
        )
    names = ", ".join(p.name for p in found)
    raise ModelLoadError(
        f"{path} holds several ONNX models ({names}); liqi serves one per version. "
        f"Name the one to serve {DEFAULT_FILE} or remove the others."
    )


def _spec(node: Any) -> TensorSpec | None:
    """A TensorSpec for an onnxruntime NodeArg, or None for a non-tensor type."""
    dtype = _DTYPES.get(node.type)
    if dtype is None:
        return None
    dims = node.shape
    # onnxruntime reports a missing shape as []: treat it as unknown, not as a scalar.
    if not dims:
        return TensorSpec(name=node.name, dtype=dtype, shape=None)
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)
    return TensorSpec(name=node.name, dtype=dtype, shape=shape)


def _to_ort(array: np.ndarray, name: str) -> np.ndarray:
    """onnxruntime wants ``str`` for string tensors; our wire format gives ``bytes``."""
    if array.dtype.kind != "O":
        return array
    try:
        return _objects(
            [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.flat],
            array.shape,
        )
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"Input {name!r} is a string tensor and must be UTF-8 for ONNX models: {exc}."
        ) from None


def _from_ort(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "OU":
        return _objects(
            [v.encode("utf-8") if isinstance(v, str) else v for v in array.flat], array.shape
        )
    return array


def _objects(values: list[Any], shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out.reshape(shape)


class OnnxServable(Servable):
    processor = "onnx"

    def __init__(
        self, name: str, version: int, session: Any, load_time_s: float, *, source: Path
    ) -> None:
        self.name = name
        self.version = version
        self.load_time_s = load_time_s
        self._session = session
        inputs: dict[str, TensorSpec] = {}
        for node in session.get_inputs():
            spec = _spec(node)
            if spec is None:
                raise ModelLoadError(
                    f"ONNX model {name!r} version {version} ({source}) has input {node.name!r} "
                    f"of type {node.type}; liqi serves tensor inputs of types "
                    f"{', '.join(sorted(t[7:-1] for t in _DTYPES))}."
                )
            inputs[spec.name] = spec
        outputs: dict[str, TensorSpec] = {}
        for node in session.get_outputs():
            spec = _spec(node)
            if spec is None:  # e.g. skl2onnx's ZipMap: seq(map(int64,tensor(float)))
                log.warning(
                    "model=%s version=%s output %s of type %s is not a tensor; it is not served",
                    name,
                    version,
                    node.name,
                    node.type,
                )
                continue
            outputs[spec.name] = spec
        if not outputs:
            raise ModelLoadError(
                f"ONNX model {name!r} version {version} ({source}) has no tensor outputs."
            )
        self.signatures = {"serving_default": Signature("serving_default", inputs, outputs)}
        self.default_signature = "serving_default"

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        sig, ready = self.prepare(inputs, signature)
        feeds = {k: _to_ort(v, k) for k, v in ready.items()}
        names = list(sig.outputs)
        results = self._session.run(names, feeds)
        return {k: _from_ort(v) for k, v in zip(names, results, strict=True)}

    def close(self) -> None:
        self._session = None


class OnnxLoader(Loader):
    """Loads ``model.onnx`` (or the single ``*.onnx``) in a version folder, on the CPU."""

    def load(self, path: Path, *, name: str, version: int) -> Servable:
        model_file = find_model_file(path)
        ort = _ort()
        started = time.monotonic()
        try:
            session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own kinds; all mean "cannot load"
            text = str(exc).strip()
            raise ModelLoadError(
                f"Cannot load the ONNX model of {name!r} version {version} from {model_file}: "
                f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            ) from None
        return OnnxServable(name, version, session, time.monotonic() - started, source=model_file)
