"""Protocol-neutral inference messages and the helpers every codec shares.

A codec decodes the wire format into an :class:`InferenceRequest` (numpy arrays keyed by
input name) and encodes an :class:`InferenceResponse` back. :class:`TensorSpec` describes what
a model expects; :func:`conform_inputs` checks and casts decoded inputs against it, so the
"expected vs received" error message is written once for every protocol.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from liqi.errors import InvalidRequestError

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "TensorSpec",
    "conform_inputs",
    "describe",
    "encode_error",
    "load_json",
    "select_outputs",
]

_NON_FINITE = re.compile(rb"NaN|-?Infinity")


@dataclass(frozen=True, eq=False)
class InferenceRequest:
    """One decoded inference call.

    Attributes:
        model: model name, from the URL path.
        version: version (or TF Serving label) from the path; ``None`` means latest.
        inputs: tensors by input name. String/bytes tensors are ``object`` arrays of ``bytes``.
            Arrays decoded from a binary body may be read-only views of that body.
        outputs: the output names the client asked for; ``None`` means all of them.
        signature: the SavedModel signature to run; ``None`` means the default one.
        parameters: protocol parameters passed through unchanged (V2 ``parameters``).
    """

    model: str
    version: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] | None = None
    signature: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class InferenceResponse:
    """The tensors a model produced for one :class:`InferenceRequest`, by output name."""

    model: str
    version: str | None
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """What a model expects of one tensor: ``None`` in ``shape`` is a variable dimension.

    ``dtype`` is a numpy dtype; ``np.dtype(object)`` stands for strings/bytes (DT_STRING, BYTES).
    """

    name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...] | None = None

    def shape_text(self) -> str:
        """The shape as ``[-1, 784]`` (``-1`` for variable dims), or ``unknown``."""
        if self.shape is None:
            return "unknown"
        return "[" + ", ".join("-1" if d is None else str(d) for d in self.shape) + "]"


def describe(array: np.ndarray) -> str:
    """``[2, 784] float64``: an array's shape and dtype for error messages."""
    kind = "bytes" if array.dtype.kind == "O" else str(array.dtype)
    return f"{list(array.shape)} {kind}"


def load_json(body: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object body, refusing NaN/Infinity and non-object documents.

    Both ``NaN`` and ``Infinity`` are refused explicitly: they are not JSON (RFC 8259), most
    clients cannot produce them, and a silent NaN in a model input is worse than a 400.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if _NON_FINITE.search(body) or "infinity" in str(exc):
            raise InvalidRequestError(
                f"The {what} body holds NaN or Infinity ({exc}); these are not valid JSON "
                "numbers and liqi refuses them. Send finite numbers."
            ) from None
        raise InvalidRequestError(f"The {what} body is not valid JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise InvalidRequestError(
            f"The {what} body must be a JSON object, received {type(document).__name__}: "
            f"{_preview(body)}."
        )
    return document


def encode_error(message: str) -> bytes:
    """The ``{"error": "<message>"}`` body TF Serving and V2 both answer errors with."""
    return orjson.dumps({"error": message})


def conform_inputs(
    inputs: Mapping[str, np.ndarray], specs: Mapping[str, TensorSpec]
) -> dict[str, np.ndarray]:
    """Check decoded inputs against a model's specs and cast them to the expected dtypes.

    Casting is "same kind" (int64 → int32, float64 → float32, int → float, but never float →
    int or number ↔ bytes) and integer casts are range-checked. Raises InvalidRequestError
    naming the input, the expected and the received shape/dtype.
    """
    unknown = sorted(set(inputs) - set(specs))
    if unknown:
        raise InvalidRequestError(
            f"Unknown input {unknown[0]!r}. The model's inputs are: {', '.join(sorted(specs))}."
        )
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise InvalidRequestError(
            f"Missing input {missing[0]!r}. The model's inputs are: {', '.join(sorted(specs))}."
        )
    return {name: _conform(inputs[name], specs[name]) for name in specs}


def _conform(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    dtype = "bytes" if spec.dtype.kind == "O" else str(spec.dtype)
    expected = f"{spec.shape_text()} {dtype}"
    if spec.shape is not None and (
        len(spec.shape) != array.ndim
        or any(d is not None and d != a for d, a in zip(spec.shape, array.shape, strict=True))
    ):
        raise InvalidRequestError(
            f"Input {spec.name!r} expects shape/dtype {expected}, received {describe(array)}."
        )
    if not _castable(array, spec.dtype):
        raise InvalidRequestError(
            f"Input {spec.name!r} expects shape/dtype {expected}, received {describe(array)}."
        )
    return array if array.dtype == spec.dtype else array.astype(spec.dtype)


def _castable(array: np.ndarray, dtype: np.dtype[Any]) -> bool:
    source, target = array.dtype, dtype
    if (source.kind == "O") != (target.kind == "O"):
        return False
    if source.kind == "O" or source == target:
        return True
    if target.kind in "iu":
        if source.kind not in "iu":
            return False
        if array.size == 0:
            return True
        info = np.iinfo(target)
        return int(array.min()) >= info.min and int(array.max()) <= info.max
    if target.kind == "f":
        return source.kind in "iuf"
    return source.kind == target.kind


def _preview(body: bytes, limit: int = 60) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text + ("..." if len(body) > limit else "")


def select_outputs(
    outputs: Mapping[str, np.ndarray], wanted: tuple[str, ...] | None
) -> dict[str, np.ndarray]:
    """The outputs a client asked for (all of them when ``wanted`` is None or empty)."""
    if not wanted:
        return dict(outputs)
    unknown = [name for name in wanted if name not in outputs]
    if unknown:
        raise InvalidRequestError(
            f"Unknown output {unknown[0]!r}. The model's outputs are: {', '.join(sorted(outputs))}."
        )
    return {name: outputs[name] for name in wanted}
