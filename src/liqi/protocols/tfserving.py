"""TensorFlow Serving REST API v1: paths, ``:predict``, ``:classify``/``:regress`` bodies.

Formats follow ``tensorflow_serving/g3doc/api_rest.md`` (see ``reference/peers.md`` b.1):

- :func:`parse_path` turns ``/v1/models/<m>[/versions/<v>|/labels/<l>][:verb|/metadata]``
  into a :class:`Route`.
- :func:`decode_predict` reads row (``instances``) and columnar (``inputs``) bodies; JSON
  numbers become int64/float64 arrays, booleans bool arrays, strings and ``{"b64": ...}``
  objects ``object`` arrays of ``bytes``. Cast to the signature with
  :func:`liqi.protocols.tensors.conform_inputs`.
- :func:`encode_predict` answers ``{"predictions": ...}`` to row requests and
  ``{"outputs": ...}`` to columnar ones; a single output is unwrapped, as TF Serving does.

A single-input model may be sent an unnamed tensor (``{"instances": [1.0, 2.0]}``); it is
decoded under the name :data:`UNNAMED_INPUT` and the server maps it to the signature's only
input.

Differences from TF Serving, on purpose: ``NaN``/``Infinity`` tokens are refused in requests
(TF Serving accepts them) and non-finite output values are written as ``null`` (TF Serving
writes bare ``NaN``, which strict JSON parsers reject).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import orjson

from liqi.errors import InvalidRequestError
from liqi.protocols.eas import data_type_name
from liqi.protocols.tensors import InferenceRequest, InferenceResponse, TensorSpec, load_json

__all__ = [
    "UNNAMED_INPUT",
    "ExamplesRequest",
    "PredictRequest",
    "Route",
    "decode_examples",
    "decode_predict",
    "encode_classify",
    "encode_metadata",
    "encode_predict",
    "encode_predict_request",
    "encode_regress",
    "encode_status",
    "parse_path",
]

UNNAMED_INPUT = ""
"""Input name for a bare tensor sent to a single-input model."""

Verb = Literal["status", "metadata", "predict", "classify", "regress"]

_PATH = re.compile(
    r"/v1/models/(?P<model>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>predict|classify|regress)|(?P<metadata>/metadata))?/?",
    re.IGNORECASE,
)
_LABEL = re.compile(r"[A-Za-z0-9_]+")
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


@dataclass(frozen=True)
class Route:
    """A parsed ``/v1/models/...`` path. At most one of ``version`` and ``label`` is set."""

    model: str
    verb: Verb
    version: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class PredictRequest:
    """A decoded ``:predict`` body and the format it came in (the response mirrors it)."""

    inference: InferenceRequest
    columnar: bool


@dataclass(frozen=True, eq=False)
class ExamplesRequest:
    """A decoded ``:classify``/``:regress`` body: tf.Example features as 1-D arrays."""

    model: str
    version: str | None
    signature: str | None
    context: dict[str, np.ndarray]
    examples: tuple[dict[str, np.ndarray], ...]


def parse_path(path: str) -> Route | None:
    """Parse a TF Serving path; ``None`` when it is not under ``/v1/``.

    Raises InvalidRequestError ("Malformed request") for a ``/v1/`` path that does not fit,
    such as ``/v1/models/m/versions/50/labels/x:regress`` or a non-integer version.
    """
    if not path.lower().startswith("/v1/"):
        return None
    match = _PATH.fullmatch(path)
    if match is None:
        raise InvalidRequestError(
            f"Malformed request: {path!r}. Expected /v1/models/<model>"
            "[/versions/<version>|/labels/<label>][:predict|:classify|:regress|/metadata]."
        )
    version, label = match["version"], match["label"]
    if version is not None and not version.isdigit():
        raise InvalidRequestError(
            f"Malformed request: {path!r}. The version must be an integer, received {version!r}."
        )
    if label is not None and not _LABEL.fullmatch(label):
        raise InvalidRequestError(
            f"Malformed request: {path!r}. A label matches [a-zA-Z0-9_]+, received {label!r}."
        )
    verb = cast(Verb, "metadata" if match["metadata"] else (match["verb"] or "status").lower())
    return Route(model=match["model"], verb=verb, version=version, label=label)


# -- predict ------------------------------------------------------------------------------


def decode_predict(body: bytes, *, model: str, version: str | None = None) -> PredictRequest:
    """Decode a ``:predict`` body (row or columnar format) into an :class:`InferenceRequest`."""
    document = load_json(body, "predict request")
    signature = document.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise InvalidRequestError(
            f"'signature_name' must be a string, received {type(signature).__name__}."
        )
    has_rows, has_columns = "instances" in document, "inputs" in document
    if has_rows == has_columns:
        raise InvalidRequestError(
            "The predict request must have exactly one of 'instances' (row format) or "
            f"'inputs' (columnar format); received keys: {', '.join(sorted(document)) or 'none'}."
        )
    if has_rows:
        inputs = _decode_rows(document["instances"])
    else:
        inputs = _decode_columns(document["inputs"])
    inference = InferenceRequest(
        model=model, version=version, inputs=inputs, signature=signature or None
    )
    return PredictRequest(inference=inference, columnar=has_columns)


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _decode_rows(instances: Any) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise InvalidRequestError("'instances' must be a non-empty list of values or objects.")
    if not _is_named(instances[0]):
        return {UNNAMED_INPUT: to_array(instances, "instances")}
    names = list(instances[0])
    for index, instance in enumerate(instances):
        if not _is_named(instance) or sorted(instance) != sorted(names):
            keys = sorted(instance) if _is_named(instance) else type(instance).__name__
            raise InvalidRequestError(
                f"Instance {index} has inputs {keys}, but instance 0 has {sorted(names)}; "
                "every instance must name the same inputs."
            )
    return {name: to_array([row[name] for row in instances], name) for name in names}


def _decode_columns(inputs: Any) -> dict[str, np.ndarray]:
    if not _is_named(inputs):
        return {UNNAMED_INPUT: to_array(inputs, "inputs")}
    if not inputs:
        raise InvalidRequestError("'inputs' must name at least one input.")
    return {name: to_array(value, name) for name, value in inputs.items()}


def to_array(value: Any, name: str) -> np.ndarray:
    """A JSON value as an array: numbers, booleans, or strings/``{"b64"}`` as bytes.

    Numeric tensors go through one ``np.asarray`` call; only string tensors are walked
    element by element.
    """
    if _first_leaf(value).__class__ is float:
        # Fast path for the common case, a tensor of floats: naming the dtype spares numpy
        # its type discovery (about a third of the decode). Anything that would slip through
        # leniently (None -> NaN, "nan") is caught by the NaN check and goes the strict way.
        try:
            fast = np.array(value, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            pass
        else:
            if not np.isnan(fast).any():
                return fast
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequestError(
            f"Input {name!r} is not a rectangular tensor of one type: {exc}"
        ) from None
    if array.dtype.kind in "biuf":
        return array
    if array.dtype.kind in "UO":
        # Re-read as objects: a "U" array has already turned any numbers into strings.
        return _to_bytes_array(np.asarray(value, dtype=object), name)
    raise InvalidRequestError(f"Input {name!r} holds unsupported values of type {array.dtype}.")


def _first_leaf(value: Any) -> Any:
    """The first scalar of a nested list (a few steps down its first elements)."""
    for _ in range(32):
        if not isinstance(value, list) or not value:
            return value
        value = value[0]
    return value


def _to_bytes_array(array: np.ndarray, name: str) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    for index, item in enumerate(array.reshape(-1).tolist()):
        if isinstance(item, str):
            flat[index] = item.encode("utf-8")
        elif _is_b64(item):
            flat[index] = _b64decode(item["b64"], name)
        else:
            kind = "null" if item is None else type(item).__name__
            raise InvalidRequestError(
                f"Input {name!r} holds a {kind} value ({item!r:.40}) next to strings or "
                'objects; a tensor holds one type: numbers, booleans, or strings/{"b64": ...}.'
            )
    return out


def _b64decode(text: Any, name: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidRequestError(f"Input {name!r}: 'b64' must be a string, received {text!r:.40}.")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequestError(
            f"Input {name!r} has invalid base64 in 'b64' ({text!r:.40}): {exc}."
        ) from None


def encode_predict(response: InferenceResponse, *, columnar: bool) -> bytes:
    """``{"predictions": ...}`` (row) or ``{"outputs": ...}`` (columnar) for a response.

    With several outputs, row format is a list of per-row objects (all outputs must share dim
    0) and columnar an object keyed by output name. Outputs whose name ends in ``_bytes`` are
    written as ``{"b64": ...}``; other bytes as UTF-8 strings (base64 if they are not UTF-8).
    """
    outputs = response.outputs
    if columnar:
        if len(outputs) == 1:
            [(name, array)] = outputs.items()
            return orjson.dumps({"outputs": _jsonable(array, name)}, option=_OPTIONS)
        value = {name: _jsonable(array, name) for name, array in outputs.items()}
        return orjson.dumps({"outputs": value}, option=_OPTIONS)
    if len(outputs) == 1:
        [(name, array)] = outputs.items()
        return orjson.dumps({"predictions": _jsonable(array, name)}, option=_OPTIONS)
    rows = {len(array) if array.ndim else 0 for array in outputs.values()}
    if len(rows) != 1 or 0 in rows:
        shapes = ", ".join(f"{n}: {list(a.shape)}" for n, a in outputs.items())
        raise InvalidRequestError(
            "Row format needs every output to share its first dimension; the model returned "
            f"{shapes}. Send the request in columnar format ('inputs') instead."
        )
    columns = {name: _jsonable(array, name) for name, array in outputs.items()}
    predictions = [{name: column[i] for name, column in columns.items()} for i in range(*rows)]
    return orjson.dumps({"predictions": predictions}, option=_OPTIONS)


def _jsonable(array: np.ndarray, name: str) -> Any:
    if array.dtype.kind == "O" or array.dtype.kind in "SU":
        return _bytes_jsonable(array, b64=name.endswith("_bytes"))
    if array.ndim == 0:
        return array.item()
    return np.ascontiguousarray(array)


def _bytes_jsonable(array: np.ndarray, *, b64: bool) -> Any:
    def one(item: Any) -> Any:
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        if not b64:
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(data).decode("ascii")}

    if array.ndim == 0:
        return one(array.item())
    out = np.empty(array.shape, dtype=object)
    out.reshape(-1)[:] = [one(item) for item in array.reshape(-1).tolist()]
    return out.tolist()


def encode_predict_request(
    inputs: Mapping[str, np.ndarray], *, columnar: bool, signature: str | None = None
) -> bytes:
    """Client side: a ``:predict`` body for ``inputs`` (bytes always sent as ``{"b64"}``).

    An input named :data:`UNNAMED_INPUT` alone is sent as a bare tensor.
    """

    def value(name: str, array: np.ndarray) -> Any:
        return _jsonable(array, "_bytes") if array.dtype.kind == "O" else _jsonable(array, name)

    document: dict[str, Any] = {}
    if signature is not None:
        document["signature_name"] = signature
    if list(inputs) == [UNNAMED_INPUT]:
        payload: Any = value(UNNAMED_INPUT, inputs[UNNAMED_INPUT])
        document["inputs" if columnar else "instances"] = payload
        return orjson.dumps(document, option=_OPTIONS)
    columns = {name: value(name, array) for name, array in inputs.items()}
    if columnar:
        document["inputs"] = columns
    else:
        rows = len(next(iter(inputs.values())))
        document["instances"] = [{n: c[i] for n, c in columns.items()} for i in range(rows)]
    return orjson.dumps(document, option=_OPTIONS)


# -- classify / regress -------------------------------------------------------------------


def decode_examples(body: bytes, *, model: str, version: str | None = None) -> ExamplesRequest:
    """Decode a ``:classify``/``:regress`` body: ``{"signature_name", "context", "examples"}``.

    Each feature is a value or a flat list: integers become int64, other numbers float32
    (tf.Example's float_list), strings and ``{"b64"}`` bytes.
    """
    document = load_json(body, "classify/regress request")
    examples = document.get("examples")
    if not isinstance(examples, list) or not examples:
        raise InvalidRequestError("'examples' must be a non-empty list of feature objects.")
    context = document.get("context", {})
    signature = document.get("signature_name")
    if signature is not None and not isinstance(signature, str):
        raise InvalidRequestError(
            f"'signature_name' must be a string, received {type(signature).__name__}."
        )
    return ExamplesRequest(
        model=model,
        version=version,
        signature=signature or None,
        context=_features(context, "context"),
        examples=tuple(_features(e, f"examples[{i}]") for i, e in enumerate(examples)),
    )


def _features(value: Any, where: str) -> dict[str, np.ndarray]:
    if not _is_named(value):
        raise InvalidRequestError(
            f"{where} must be an object of features, received {type(value).__name__}."
        )
    features = {}
    for name, raw in value.items():
        array = to_array(raw if isinstance(raw, list) else [raw], f"{where}.{name}")
        if array.ndim != 1:
            raise InvalidRequestError(
                f"Feature {where}.{name} must be a value or a flat list, received shape "
                f"{list(array.shape)}."
            )
        if array.dtype.kind == "f":
            with np.errstate(over="ignore"):
                array = array.astype(np.float32)
            if not np.isfinite(array).all():
                raise InvalidRequestError(
                    f"Feature {where}.{name} holds a number beyond float32's range (about "
                    "3.4e38), which a tf.Example float_list cannot carry. Send smaller values."
                )
        elif array.dtype.kind == "b":
            array = array.astype(np.int64)
        features[name] = array
    return features


def encode_classify(scores: np.ndarray, classes: np.ndarray | None = None) -> bytes:
    """``{"results": [[[label, score], ...], ...]}``: one list of pairs per example.

    ``scores`` is ``[examples, classes]``; ``classes`` (same shape, bytes) defaults to ``""``
    labels, as TF Serving writes when the signature has no classes output.
    """
    scores = np.asarray(scores).reshape(len(scores), -1)
    if classes is None:
        labels: list[list[Any]] = [[""] * scores.shape[1]] * scores.shape[0]
    else:
        labels = _bytes_jsonable(np.asarray(classes).reshape(scores.shape), b64=False)
    results = [
        [[label, score] for label, score in zip(row_labels, row_scores, strict=True)]
        for row_labels, row_scores in zip(labels, scores.tolist(), strict=True)
    ]
    return orjson.dumps({"results": results})


def encode_regress(values: np.ndarray) -> bytes:
    """``{"results": [v, ...]}``: one value per example (``[n]`` or ``[n, 1]`` outputs)."""
    return orjson.dumps({"results": np.asarray(values).reshape(-1).tolist()})


# -- status -------------------------------------------------------------------------------


def encode_status(versions: Sequence[tuple[str, str, str]]) -> bytes:
    """A status body from ``(version, state, error_message)`` triples.

    ``state`` is one of UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END; an empty message
    means ``OK``.
    """
    return orjson.dumps(
        {
            "model_version_status": [
                {
                    "version": version,
                    "state": state,
                    "status": {
                        "error_code": "UNKNOWN" if message else "OK",
                        "error_message": message,
                    },
                }
                for version, state, message in versions
            ]
        }
    )


# -- metadata -----------------------------------------------------------------------------


def encode_metadata(
    model: str,
    version: str,
    signatures: Mapping[str, tuple[Sequence[TensorSpec], Sequence[TensorSpec]]],
) -> bytes:
    """``GET /v1/models/<m>[/versions/<v>]/metadata``: the SignatureDefMap as TF Serving
    writes it (``signatures`` maps a name to its ``(inputs, outputs)``)."""

    def tensor(spec: TensorSpec) -> dict[str, Any]:
        info: dict[str, Any] = {"dtype": data_type_name(spec), "name": spec.name}
        if spec.shape is None:
            info["tensor_shape"] = {"dim": [], "unknown_rank": True}
        else:
            dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape]
            info["tensor_shape"] = {"dim": dims, "unknown_rank": False}
        return info

    signature_def = {
        name: {
            "inputs": {spec.name: tensor(spec) for spec in inputs},
            "outputs": {spec.name: tensor(spec) for spec in outputs},
            "method_name": "tensorflow/serving/predict",
        }
        for name, (inputs, outputs) in signatures.items()
    }
    return orjson.dumps(
        {
            "model_spec": {"name": model, "signature_name": "", "version": version},
            "metadata": {"signature_def": {"signature_def": signature_def}},
        }
    )
