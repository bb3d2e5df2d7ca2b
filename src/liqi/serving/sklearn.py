"""scikit-learn estimators saved with joblib or pickle -> a Servable.

One signature, ``serving_default``: input ``inputs`` (rows of features, float64), outputs
``predictions`` (``predict``) and, for classifiers that have it, ``probabilities``
(``predict_proba``). An estimator fitted on a DataFrame also takes its feature columns by name,
which is what an EAS/PMML style JSON body ``[{"fea1": 1, "fea2": 2}]`` decodes to.

Unpickling runs code from the file: serve only models you trust. joblib and scikit-learn are
imported when a model is loaded, never at import time. ``predict`` is thread-safe as far as the
estimator's own ``predict`` is (every scikit-learn estimator's is).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from liqi.errors import BackendUnavailableError, InvalidRequestError, ModelLoadError, NotFoundError
from liqi.protocols.tensors import TensorSpec, conform_inputs, describe
from liqi.serving.loaders import Loader, Servable, Signature

__all__ = ["SklearnLoader", "SklearnServable"]

log = logging.getLogger(__name__)

DEFAULT_FILES = ("model.joblib", "model.pkl", "model.pickle")
SUFFIXES = (".joblib", ".pkl", ".pickle")
INPUT = "inputs"

_NO_NAMES = "X does not have valid feature names"
_warnings_lock = threading.Lock()  # warnings.catch_warnings swaps process-wide state


def _joblib() -> Any:
    try:
        importlib.import_module("sklearn")
        return importlib.import_module("joblib")
    except ImportError:
        raise BackendUnavailableError(
            "Serving a scikit-learn model needs scikit-learn and joblib: "
            "pip install 'liqi[sklearn]'."
        ) from None


def find_model_file(path: Path) -> Path:
    """The pickle ``path`` names or holds (``model.joblib``, ``.pkl``, ``.pickle`` first)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise NotFoundError(f"No scikit-learn model at {path}: the path does not exist.")
    for name in DEFAULT_FILES:
        if (path / name).is_file():
            return path / name
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFoundError(
            f"No scikit-learn model in {path}: expected model.joblib, model.pkl or "
            "model.pickle (or a single *.joblib/*.pkl/*.pickle file) there."
        )
    names = ", ".join(p.name for p in found)
    raise ModelLoadError(
        f"{path} holds several pickles ({names}); liqi serves one model per version. "
        "Name the one to serve model.joblib or remove the others."
    )


def _as_output(value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind in "OU":  # string labels -> bytes, like every string tensor we send
        out = np.empty(array.size, dtype=object)
        out[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in array.flat]
        return out.reshape(array.shape)
    return array


def _label_dtype(classes: Any) -> np.dtype[Any]:
    if isinstance(classes, np.ndarray):
        return np.dtype(object) if classes.dtype.kind in "OU" else classes.dtype
    return np.dtype(np.float64)


class SklearnServable(Servable):
    processor = "sklearn"

    def __init__(self, name: str, version: int, estimator: Any, load_time_s: float) -> None:
        self.name = name
        self.version = version
        self.load_time_s = load_time_s
        self._estimator = estimator
        width = getattr(estimator, "n_features_in_", None)
        self._width = int(width) if isinstance(width, (int, np.integer)) else None
        names = getattr(estimator, "feature_names_in_", None)
        self._columns = [str(n) for n in names] if names is not None else None
        self._pandas = _pandas() if self._columns else None
        classes = getattr(estimator, "classes_", None)
        single = isinstance(classes, np.ndarray) and classes.ndim == 1
        self._proba = hasattr(estimator, "predict_proba") and single
        inputs = {INPUT: TensorSpec(INPUT, np.dtype(np.float64), (None, self._width))}
        outputs = {"predictions": TensorSpec("predictions", _label_dtype(classes), (None,))}
        if self._proba:
            assert isinstance(classes, np.ndarray)
            outputs["probabilities"] = TensorSpec(
                "probabilities", np.dtype(np.float64), (None, len(classes))
            )
        self.signatures = {"serving_default": Signature("serving_default", inputs, outputs)}
        self.default_signature = "serving_default"

    def predict(
        self, inputs: Mapping[str, np.ndarray], signature: str | None = None
    ) -> dict[str, np.ndarray]:
        sig = self.signature(signature)
        matrix = self._matrix(inputs, sig)
        features: Any = matrix
        if self._columns is not None and self._pandas is not None:
            features = self._pandas.DataFrame(matrix, columns=self._columns)
        try:
            if self._columns is not None and self._pandas is None:
                with _warnings_lock, warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=_NO_NAMES, category=UserWarning)
                    return self._run(features, sig)
            return self._run(features, sig)
        except ValueError as exc:  # scikit-learn's word for "bad input" (NaN, wrong width)
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else "ValueError"
            raise InvalidRequestError(
                f"Model {self.name!r} refused input {INPUT!r} {describe(matrix)} (expected "
                f"{sig.inputs[INPUT].shape_text()} float64): {text}"
            ) from None

    def _run(self, features: Any, sig: Signature) -> dict[str, np.ndarray]:
        outputs = {"predictions": _as_output(self._estimator.predict(features))}
        if "probabilities" in sig.outputs:
            outputs["probabilities"] = _as_output(self._estimator.predict_proba(features))
        return outputs

    def _matrix(self, inputs: Mapping[str, np.ndarray], sig: Signature) -> np.ndarray:
        """The request as one float64 matrix: ``inputs`` itself, or the named columns."""
        if self._columns is not None and INPUT not in inputs and set(inputs) & set(self._columns):
            return self._stack_columns(inputs)
        if set(inputs) != {INPUT}:
            accepted = f"{INPUT!r} {sig.inputs[INPUT].shape_text()}"
            if self._columns is not None:
                accepted += " or the feature columns " + ", ".join(self._columns)
            received = ", ".join(sorted(inputs)) or "none"
            raise InvalidRequestError(
                f"Model {self.name!r} takes {accepted}; received inputs: {received}."
            )
        return conform_inputs(dict(inputs), sig.inputs)[INPUT]

    def _stack_columns(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        assert self._columns is not None
        missing = [c for c in self._columns if c not in inputs]
        unknown = sorted(set(inputs) - set(self._columns))
        if missing or unknown:
            raise InvalidRequestError(
                f"Model {self.name!r} takes the feature columns {', '.join(self._columns)}; "
                + (f"missing: {', '.join(missing)}. " if missing else "")
                + (f"unknown: {', '.join(unknown)}." if unknown else "")
            )
        specs = {c: TensorSpec(c, np.dtype(np.float64), (None,)) for c in self._columns}
        ready = conform_inputs(dict(inputs), specs)
        lengths = {c: len(ready[c]) for c in self._columns}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{c}: {n}" for c, n in lengths.items())
            raise InvalidRequestError(
                f"Model {self.name!r} needs feature columns of one length; received {shown}."
            )
        return np.stack([ready[c] for c in self._columns], axis=1)


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError:
        return None


class SklearnLoader(Loader):
    """Loads a joblib/pickle file (``model.joblib`` first) in a version folder."""

    def load(self, path: Path, *, name: str, version: int) -> Servable:
        model_file = find_model_file(path)
        joblib = _joblib()
        log.warning(
            "model=%s version=%s loading %s runs code from the pickle; only serve models you trust",
            name,
            version,
            model_file,
        )
        started = time.monotonic()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                estimator = joblib.load(model_file)
        except Exception as exc:  # unpickling raises anything; all mean "cannot load"
            text = str(exc).strip()
            raise ModelLoadError(
                f"Cannot load the scikit-learn model of {name!r} version {version} from "
                f"{model_file}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"
            ) from None
        for warning in caught:  # e.g. InconsistentVersionWarning: pickled by another version
            log.warning("model=%s version=%s %s", name, version, warning.message)
        if not callable(getattr(estimator, "predict", None)):
            raise ModelLoadError(
                f"{model_file} holds a {type(estimator).__name__}, not a fitted estimator: it "
                "has no predict method. Save the estimator itself: "
                "joblib.dump(model, 'model.joblib')."
            )
        return SklearnServable(name, version, estimator, time.monotonic() - started)
