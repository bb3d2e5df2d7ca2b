"""Loaders: a model version in a folder -> a Servable that answers ``predict``.

The Loader seam has one implementation so far, :class:`SavedModelLoader` (TensorFlow
SavedModels, including TF 1.x ``SavedModelBuilder`` exports); ONNX, scikit-learn and custom
processors come with the model server. TensorFlow is imported when a SavedModel is loaded,
never at import time.
"""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from liqi.errors import BackendUnavailableError, InvalidRequestError, LiqiError, NotFoundError
from liqi.protocols.tensors import TensorSpec, conform_inputs

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


class ModelLoadError(LiqiError):
    """A model version could not be loaded; the message says why."""

    code = "model_load_failed"


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class Servable(ABC):
    """A loaded model version. ``predict`` is thread-safe and may run off the event loop."""

    name: str
    version: int
    signatures: dict[str, Signature]
    default_signature: str
    load_time_s: float

    def signature(self, name: str | None) -> Signature:
        chosen = name or self.default_signature
        found = self.signatures.get(chosen)
        if found is None:
            known = ", ".join(sorted(self.signatures)) or "none"
            raise InvalidRequestError(
                f"Model {self.name!r} version {self.version} has no signature {chosen!r}. "
                f"Available signatures: {known}."
            )
        return found

    @abstractmethod
    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        """Run the signature on a batch; inputs are checked and cast to its specs first."""


class Loader(ABC):
    @abstractmethod
    def load(self, path: Path, *, name: str, version: int) -> Servable:
        """Load the model version in ``path``. Raises ModelLoadError or NotFoundError."""


def _tf() -> Any:
    try:
        return importlib.import_module("tensorflow")
    except ImportError:
        raise BackendUnavailableError(
            "Serving a SavedModel needs TensorFlow: pip install 'liqi[tf]'."
        ) from None


def _spec(name: str, tf_spec: Any) -> TensorSpec:
    dtype = (
        np.dtype(object)
        if tf_spec.dtype.name == "string"
        else np.dtype(tf_spec.dtype.as_numpy_dtype)
    )
    shape = None if tf_spec.shape.rank is None else tuple(tf_spec.shape.as_list())
    return TensorSpec(name=name, dtype=dtype, shape=shape)


class SavedModelServable(Servable):
    def __init__(self, name: str, version: int, loaded: Any, load_time_s: float) -> None:
        self.name = name
        self.version = version
        self.load_time_s = load_time_s
        self._loaded = loaded  # keeps the functions' variables alive
        self._functions: dict[str, Any] = {}
        self.signatures = {}
        for key, function in loaded.signatures.items():
            _, kwargs = function.structured_input_signature
            outputs = function.structured_outputs
            self._functions[key] = function
            self.signatures[key] = Signature(
                name=key,
                inputs={k: _spec(k, v) for k, v in sorted(kwargs.items())},
                outputs={k: _spec(k, v) for k, v in sorted(outputs.items())},
            )
        if not self.signatures:
            raise ModelLoadError(f"SavedModel {name!r} version {version} has no signatures.")
        self.default_signature = (
            "serving_default"
            if "serving_default" in self.signatures
            else sorted(self.signatures)[0]
        )

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        sig = self.signature(signature)
        unknown = sorted(set(inputs) - set(sig.inputs))
        missing = sorted(set(sig.inputs) - set(inputs))
        if unknown or missing:
            raise InvalidRequestError(
                f"Signature {sig.name!r} takes inputs {', '.join(sorted(sig.inputs))}; "
                + (f"unknown: {', '.join(unknown)}. " if unknown else "")
                + (f"missing: {', '.join(missing)}." if missing else "")
            )
        ready = conform_inputs(dict(inputs), sig.inputs)
        tf = _tf()
        result = self._functions[sig.name](**{k: tf.constant(v) for k, v in ready.items()})
        return {k: v.numpy() for k, v in result.items()}


class SavedModelLoader(Loader):
    def load(self, path: Path, *, name: str, version: int) -> Servable:
        if not any((path / f).is_file() for f in SAVED_MODEL_FILES):
            raise NotFoundError(
                f"No SavedModel in {path}: expected saved_model.pb (or .pbtxt) there. Export "
                "one with tf.saved_model.save or SavedModelBuilder."
            )
        tf = _tf()
        started = time.monotonic()
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as exc:  # TensorFlow raises many kinds; all mean "cannot load"
            raise ModelLoadError(
                f"Cannot load the SavedModel of {name!r} version {version} from {path}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            ) from None
        return SavedModelServable(name, version, loaded, time.monotonic() - started)
