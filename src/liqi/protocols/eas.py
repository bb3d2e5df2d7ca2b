"""PAI-EAS data plane, TensorFlow flavour: ``POST /api/predict/<name>`` bodies and auth.

Sans-IO: bytes in, numpy arrays and frozen dataclasses out. Nothing here opens a socket or
imports TensorFlow; the HTTP app calls these functions with the body and headers it read.

- :func:`decode_predict_request` / :func:`encode_predict_response`: the server side of the
  protobuf ``tensorflow.eas.PredictRequest`` / ``PredictResponse`` of the EAS SDKs
  (``eas_predict.proto``); :func:`encode_predict_request` / :func:`decode_predict_response`
  are the client side, used by our client and the tests.
- :func:`signature_json`: the body of ``GET /api/predict/<name>`` that describes the
  signature (``{"signature_name", "inputs": [{"name", "shape", "type"}], "outputs": [...]}``).
- :func:`check_authorization`: the ``Authorization`` header, either the raw service token or
  the SDKs' ``EAS <base64 HMAC-SHA1(token, string_to_sign)>`` signature
  (:func:`string_to_sign`); :func:`sign_request` makes the SDK headers for our client.

Dtypes: DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_INT64, DT_BOOL map to
the numpy dtype of the same name; DT_STRING maps to an ``object`` array of ``bytes``. The
other ``ArrayDataType`` values have no value field in ``ArrayProto`` and are refused.

The generated ``eas_predict_pb2`` module is untyped; it is used only through the typed
functions of this module.
"""

from __future__ import annotations

import enum
import importlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from liqi.errors import InvalidRequestError, LiqiError
from liqi.protocols import eas_predict_pb2
from liqi.protocols.tensors import InferenceRequest, TensorSpec

__all__ = [
    "ArrayDataType",
    "EasRequest",
    "EasResponse",
    "decode_predict_request",
    "decode_predict_response",
    "encode_predict_request",
    "encode_predict_response",
    "numpy_dtype",
    "signature_document",
    "signature_json",
]

_pb: Any = eas_predict_pb2  # generated and untyped: every use below is wrapped in types
# protobuf ships no type information; fetched by name so mypy needs no stubs for it.
_DecodeError: type[Exception] = importlib.import_module("google.protobuf.message").DecodeError

DEFAULT_CONTENT_TYPE = "application/octet-stream"
"""What the EAS SDKs send (and sign) unless told otherwise."""


class ArrayDataType(enum.IntEnum):
    """``tensorflow.eas.ArrayDataType``: TensorFlow's DataType numbers."""

    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21


_DT = ArrayDataType

# The dtypes an ArrayProto can carry: enum -> (numpy dtype, the *_val field holding values).
_CARRIED: dict[ArrayDataType, tuple[np.dtype[Any], str]] = {
    _DT.DT_FLOAT: (np.dtype(np.float32), "float_val"),
    _DT.DT_DOUBLE: (np.dtype(np.float64), "double_val"),
    _DT.DT_INT32: (np.dtype(np.int32), "int_val"),
    _DT.DT_UINT8: (np.dtype(np.uint8), "int_val"),
    _DT.DT_INT16: (np.dtype(np.int16), "int_val"),
    _DT.DT_INT8: (np.dtype(np.int8), "int_val"),
    _DT.DT_STRING: (np.dtype(object), "string_val"),
    _DT.DT_INT64: (np.dtype(np.int64), "int64_val"),
    _DT.DT_BOOL: (np.dtype(np.bool_), "bool_val"),
}
_VALUE_FIELDS = ("float_val", "double_val", "int_val", "string_val", "int64_val", "bool_val")
_SUPPORTED = ", ".join(dt.name for dt in _CARRIED)

# numpy dtype -> enum, for encoding and for the signature JSON. The signature JSON may name
# dtypes that requests cannot carry (a float16 input is described as DT_HALF).
_FROM_NUMPY: dict[np.dtype[Any], ArrayDataType] = {
    np.dtype(np.float32): _DT.DT_FLOAT,
    np.dtype(np.float64): _DT.DT_DOUBLE,
    np.dtype(np.int32): _DT.DT_INT32,
    np.dtype(np.uint8): _DT.DT_UINT8,
    np.dtype(np.int16): _DT.DT_INT16,
    np.dtype(np.int8): _DT.DT_INT8,
    np.dtype(np.int64): _DT.DT_INT64,
    np.dtype(np.bool_): _DT.DT_BOOL,
    np.dtype(object): _DT.DT_STRING,
}
_DESCRIBED_ONLY: dict[np.dtype[Any], ArrayDataType] = {
    np.dtype(np.float16): _DT.DT_HALF,
    np.dtype(np.uint16): _DT.DT_UINT16,
    np.dtype(np.complex64): _DT.DT_COMPLEX64,
    np.dtype(np.complex128): _DT.DT_COMPLEX128,
}


@dataclass(frozen=True, eq=False)
class EasRequest:
    """A decoded ``PredictRequest``.

    ``signature_name`` is ``""`` when the client did not name one (use the default
    signature); ``output_filter`` is empty when the client wants every output. Compare the
    fields, not the objects: arrays have no single truth value.
    """

    signature_name: str
    inputs: dict[str, npt.NDArray[Any]]
    output_filter: tuple[str, ...] = ()

    def to_inference_request(self, model: str, version: str | None = None) -> InferenceRequest:
        """The protocol-neutral request: no signature name or filter becomes ``None``."""
        return InferenceRequest(
            model=model,
            version=version,
            inputs=dict(self.inputs),
            outputs=self.output_filter or None,
            signature=self.signature_name or None,
        )


@dataclass(frozen=True, eq=False)
class EasResponse:
    """A decoded ``PredictResponse`` (client side)."""

    outputs: dict[str, npt.NDArray[Any]]


# -- decoding ------------------------------------------------------------------------------


def decode_predict_request(body: bytes) -> EasRequest:
    """Parse a serialized ``tensorflow.eas.PredictRequest``.

    Raises:
        InvalidRequestError: the body is empty or not a PredictRequest, or an input has an
            unsupported dtype, a negative dimension, or a value count that its shape does
            not match. The message names the input.
    """
    if not body:
        raise InvalidRequestError(
            "The request body is empty. Send a serialized tensorflow.eas.PredictRequest "
            "(eas_prediction.TFRequest.to_string()) as the body."
        )
    request = _parse(_pb.PredictRequest, body, "PredictRequest")
    inputs = {
        str(name): _to_array(proto, what=f"input '{name}'")
        for name, proto in sorted(request.inputs.items())
    }
    return EasRequest(
        signature_name=str(request.signature_name),
        inputs=inputs,
        output_filter=tuple(str(name) for name in request.output_filter),
    )


def decode_predict_response(body: bytes) -> EasResponse:
    """Parse a serialized ``tensorflow.eas.PredictResponse`` (client side)."""
    response = _parse(_pb.PredictResponse, body, "PredictResponse")
    return EasResponse(
        outputs={
            str(name): _to_array(proto, what=f"output '{name}'")
            for name, proto in sorted(response.outputs.items())
        }
    )


def _parse(message_type: Any, body: bytes, kind: str) -> Any:
    message = message_type()
    try:
        message.ParseFromString(body)
    except (_DecodeError, ValueError) as exc:
        raise InvalidRequestError(
            f"The body ({len(body)} bytes) is not a valid tensorflow.eas.{kind}: {exc}. "
            "Send the bytes of the serialized protobuf, complete and unmodified, with "
            "Content-Type application/octet-stream."
        ) from None
    return message


def _to_array(proto: Any, *, what: str) -> npt.NDArray[Any]:
    dtype_number = int(proto.dtype)
    try:
        data_type = ArrayDataType(dtype_number)
    except ValueError:
        raise InvalidRequestError(
            f"The {what} has dtype {dtype_number}, which is not an ArrayDataType. "
            f"Use one of {_SUPPORTED}."
        ) from None
    if data_type not in _CARRIED:
        hint = " (the dtype field is not set)" if data_type is _DT.DT_INVALID else ""
        raise InvalidRequestError(
            f"The {what} has dtype {data_type.name}{hint}, which the EAS TensorFlow protocol "
            f"cannot carry. Use one of {_SUPPORTED}."
        )
    dtype, field = _CARRIED[data_type]
    shape = tuple(int(d) for d in proto.array_shape.dim)
    if any(d < 0 for d in shape):
        raise InvalidRequestError(
            f"The {what} has shape {list(shape)}; a request needs every dimension >= 0 "
            "(-1 is only for signatures)."
        )
    values = getattr(proto, field)
    expected = math.prod(shape)
    if len(values) != expected:
        others = [f for f in _VALUE_FIELDS if f != field and len(getattr(proto, f))]
        hint = f" Values were found in {', '.join(others)}." if others else ""
        raise InvalidRequestError(
            f"The {what} has shape {list(shape)}, which needs {expected} values, but its "
            f"{field} holds {len(values)} ({data_type.name} values go in {field}).{hint} "
            "Make the shape and the number of values agree."
        )
    if data_type is _DT.DT_STRING:
        array: npt.NDArray[Any] = np.empty(expected, dtype=object)
        array[:] = list(values)
    elif field == "int_val" and dtype != np.int32:
        wide = np.array(values, dtype=np.int32)
        info = np.iinfo(dtype)
        if wide.size and (int(wide.min()) < info.min or int(wide.max()) > info.max):
            raise InvalidRequestError(
                f"The {what} is {data_type.name} but holds values from {int(wide.min())} to "
                f"{int(wide.max())}, outside [{info.min}, {info.max}]. Send values that fit, "
                "or a wider dtype."
            )
        array = wide.astype(dtype)
    else:
        array = np.array(values, dtype=dtype)
    return array.reshape(shape)


# -- encoding ------------------------------------------------------------------------------


def encode_predict_response(outputs: Mapping[str, npt.ArrayLike]) -> bytes:
    """Serialize outputs as a ``tensorflow.eas.PredictResponse``.

    Raises:
        LiqiError: an output has a dtype the protocol cannot carry (a server-side problem:
            the model's signature must cast it).
    """
    response = _pb.PredictResponse()
    for name, value in outputs.items():
        try:
            _fill(response.outputs[name], value, what=f"output '{name}'")
        except InvalidRequestError as exc:
            raise LiqiError(f"{exc.message} Cast it in the model's signature.") from None
    return _serialize(response)


def encode_predict_request(
    inputs: Mapping[str, npt.ArrayLike],
    *,
    signature_name: str = "",
    output_filter: Iterable[str] = (),
) -> bytes:
    """Serialize a ``tensorflow.eas.PredictRequest``, as ``eas_prediction.TFRequest`` does.

    Raises:
        InvalidRequestError: an input has a dtype the protocol cannot carry, or a string
            tensor holds something other than ``bytes``/``str``.
    """
    request = _pb.PredictRequest(signature_name=signature_name)
    for name, value in inputs.items():
        _fill(request.inputs[name], value, what=f"input '{name}'")
    request.output_filter.extend(output_filter)
    return _serialize(request)


def _serialize(message: Any) -> bytes:
    data = message.SerializeToString()
    assert isinstance(data, bytes)
    return data


def _fill(proto: Any, value: npt.ArrayLike, *, what: str) -> None:
    array = np.asarray(value)
    if array.dtype.kind in "SU":
        array = array.astype(object)
    data_type = _FROM_NUMPY.get(array.dtype)
    if data_type is None:
        raise InvalidRequestError(
            f"The {what} has numpy dtype {array.dtype}, which the EAS TensorFlow protocol "
            f"cannot carry. Use one of float32, float64, int32, uint8, int16, int8, int64, "
            "bool, or bytes/str."
        )
    proto.dtype = int(data_type)
    proto.array_shape.dim.extend(array.shape)
    flat = array.ravel()
    field = _CARRIED[data_type][1]
    packed = _PACKED.get(data_type)
    if packed is not None:
        # Fixed-width values: the packed field's wire bytes are the array's little-endian
        # bytes; merging them is ~20x faster than extending the field value by value.
        tag, little_endian = packed
        payload = flat.astype(little_endian, copy=False).tobytes()
        proto.MergeFromString(tag + _varint(len(payload)) + payload)
    elif data_type is _DT.DT_STRING:
        proto.string_val.extend(_as_bytes(item, what=what) for item in flat)
    else:
        getattr(proto, field).extend(flat.tolist())


# Packed repeated fields of ArrayProto with fixed-width values: (field tag, wire dtype).
_PACKED: dict[ArrayDataType, tuple[bytes, str]] = {
    _DT.DT_FLOAT: (bytes([3 << 3 | 2]), "<f4"),
    _DT.DT_DOUBLE: (bytes([4 << 3 | 2]), "<f8"),
}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _as_bytes(item: object, *, what: str) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    raise InvalidRequestError(
        f"The {what} is a string tensor but holds a {type(item).__name__} ({item!r}). "
        "String tensors hold bytes or str only."
    )


# -- signature JSON (GET /api/predict/<name>) ----------------------------------------------


def signature_document(
    signature_name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> dict[str, Any]:
    """The signature description that EAS's TF processor answers a GET with.

    Variable dimensions are ``-1``; a tensor of unknown rank (``shape=None``) has
    ``"shape": null``.
    """
    return {
        "signature_name": signature_name,
        "inputs": [_describe(spec) for spec in inputs],
        "outputs": [_describe(spec) for spec in outputs],
    }


def signature_json(
    signature_name: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> bytes:
    """:func:`signature_document` as a JSON body."""
    return orjson.dumps(signature_document(signature_name, inputs, outputs))


def numpy_dtype(data_type: int | str) -> np.dtype[Any] | None:
    """The numpy dtype of an ``ArrayDataType`` (its number or its ``DT_*`` name), or
    ``None`` when the protocol cannot carry it (``object`` stands for DT_STRING)."""
    try:
        key = ArrayDataType[data_type] if isinstance(data_type, str) else ArrayDataType(data_type)
    except (KeyError, ValueError):
        return None
    carried = _CARRIED.get(key)
    return None if carried is None else carried[0]


def data_type_name(spec: TensorSpec) -> str:
    """The TensorFlow ``DT_*`` name of a tensor's dtype (``DT_STRING`` for bytes)."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind in "SU":
        dtype = np.dtype(object)
    data_type = _FROM_NUMPY.get(dtype) or _DESCRIBED_ONLY.get(dtype)
    if data_type is None:
        raise ValueError(f"Tensor '{spec.name}' has numpy dtype {dtype}, which has no DT_ name.")
    return data_type.name


def _describe(spec: TensorSpec) -> dict[str, Any]:
    shape = None if spec.shape is None else [-1 if d is None or d < 0 else d for d in spec.shape]
    return {"name": spec.name, "shape": shape, "type": data_type_name(spec)}
