"""Loaders: a model version in a folder -> a Servable that answers ``predict``.

A :class:`Servable` runs tensors through named signatures (TensorFlow SavedModels here,
including TF 1.x ``SavedModelBuilder`` exports; ONNX and scikit-learn in their own modules). A
:class:`RawServable` is a custom processor: bytes in, bytes and a status out, no signatures.
TensorFlow is imported when a SavedModel is loaded, never at import time.
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

from liqi.errors import (
    BackendUnavailableError,
    InvalidRequestError,
    ModelLoadError,
    NotFoundError,
)

__all__ = [
    "Loader",
    "ModelLoadError",
    "RawServable",
    "SavedModelLoader",
    "SavedModelServable",
    "Servable",
    "Signature",
]
from liqi.protocols.tensors import TensorSpec, conform_inputs

SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True)
class Signature:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


class Servable(ABC):
    """A loaded model version. ``predict`` is thread-safe and may run off the event loop.

    ``processor`` names the kind (``tensorflow``, ``onnx``, ``sklearn``, ``python``).
    """

    name: str
    version: int
    signatures: dict[str, Signature]
    default_signature: str
    load_time_s: float
    processor: str = "tensorflow"

    def batchable(self, signature: str | None = None) -> bool:
        """Whether requests to ``signature`` may be concatenated along the first dimension:
        every input has a known rank >= 1 and a variable first dimension."""
        sig = self.signature(signature)
        return bool(sig.inputs) and all(
            spec.shape is not None and len(spec.shape) >= 1 and spec.shape[0] is None
            for spec in sig.inputs.values()
        )

    def warmup_inputs(self, signature: str | None = None) -> dict[str, np.ndarray]:
        """One synthetic request for ``signature``: zeros (empty strings), variable dims 1."""
        sig = self.signature(signature)
        inputs: dict[str, np.ndarray] = {}
        for name, spec in sig.inputs.items():
            shape = tuple(1 if d is None else d for d in (spec.shape or (1,)))
            if spec.dtype == np.dtype(object):
                inputs[name] = np.full(shape, b"", dtype=object)
            else:
                inputs[name] = np.zeros(shape, dtype=spec.dtype)
        return inputs

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the version holds (sessions, files); called once, after its last
        request. Most versions hold nothing beyond what garbage collection frees."""

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

    def prepare(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> tuple[Signature, dict[str, np.ndarray]]:
        """The signature and the inputs checked (names, shapes, dtypes) and cast to it."""
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
        return sig, ready

    @abstractmethod
    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        """Run the signature on a batch; inputs are checked and cast to its specs first."""


class RawServable(Servable):
    """A custom processor: ``process(bytes) -> (bytes, status)``, served on the EAS route only.

    ``worker_threads`` calls may run at once (EAS's ``rpc.worker_threads``); no batching.
    """

    processor = "python"
    worker_threads: int = 5

    def batchable(self, signature: str | None = None) -> bool:
        return False

    def warmup_inputs(self, signature: str | None = None) -> dict[str, np.ndarray]:
        return {}

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        raise InvalidRequestError(
            f"Model {self.name!r} is a custom processor: it takes a raw body on "
            f"POST /api/predict/{self.name}, not tensors."
        )

    @abstractmethod
    def process(self, data: bytes) -> tuple[bytes, int]:
        """Answer one raw request: the body and an HTTP status (0 means 200)."""


class Loader(ABC):
    @abstractmethod
    def load(self, path: Path, *, name: str, version: int) -> Servable:
        """Load the model version in ``path``. Raises ModelLoadError or NotFoundError."""


def optional_module(name: str, needed_for: str, extra: str) -> Any:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BackendUnavailableError(
            f"Serving {needed_for} needs {name}: pip install 'liqi[{extra}]'."
        ) from None


def _tf() -> Any:
    return optional_module("tensorflow", "a SavedModel", "tf")


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
        sig, ready = self.prepare(inputs, signature)
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
