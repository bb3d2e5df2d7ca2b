"""Tensor data of the Open Inference Protocol: JSON ``data`` and binary-extension bytes to
numpy arrays and back, for every V2 datatype. Used by :mod:`liqi.protocols.v2`."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from liqi.errors import InvalidRequestError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
"""V2 datatype names and their numpy dtypes (BYTES: ``object`` arrays of ``bytes``)."""

LENGTH = struct.Struct("<I")


def from_json(
    data: Any, shape: tuple[int, ...], dtype: np.dtype[Any], datatype: str, name: str
) -> np.ndarray:
    count = math.prod(shape)
    if dtype.kind == "O":
        return bytes_from_json(data, shape, count, name)
    try:
        array = np.asarray(data)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequestError(
            f"Input {name!r} data is not a rectangular tensor: {exc}"
        ) from None
    if array.size != count:
        raise InvalidRequestError(
            f"Input {name!r} has shape {list(shape)} ({count} elements) but its data holds "
            f"{array.size} elements."
        )
    if count == 0:
        return np.empty(shape, dtype)
    array = typed(array, data, dtype, datatype, name)
    return array.reshape(shape)


def typed(
    array: np.ndarray, data: Any, dtype: np.dtype[Any], datatype: str, name: str
) -> np.ndarray:
    kind = array.dtype.kind
    received = {"b": "booleans", "i": "integers", "u": "integers", "f": "floats"}.get(
        kind, "strings or objects"
    )
    mismatch = InvalidRequestError(
        f"Input {name!r} has datatype {datatype} but data holds {received}."
    )
    if dtype.kind == "b":
        if kind != "b":
            raise mismatch
        return array
    if dtype.kind == "f":
        if kind not in "iuf":
            raise mismatch
        with np.errstate(over="ignore"):
            typed = array.astype(dtype)
        if kind == "f" and dtype.itemsize < 8 and not np.isfinite(typed).all():
            raise InvalidRequestError(f"Input {name!r} holds values out of range for {datatype}.")
        return typed
    if kind == "f" and np.abs(array).max() >= 2**63:
        array = exact_integers(data, name, mismatch)  # [1, 2**63] parses as float64
    elif kind not in "iu":
        raise mismatch
    info = np.iinfo(dtype)
    if int(array.min()) < info.min or int(array.max()) > info.max:
        raise InvalidRequestError(
            f"Input {name!r} holds values outside {datatype}'s range [{info.min}, {info.max}]."
        )
    return array.astype(dtype)


def exact_integers(data: Any, name: str, mismatch: InvalidRequestError) -> np.ndarray:
    """Integers past int64 (or mixed with them) as an exact object array; rare, so walked."""
    objects = np.asarray(data, dtype=object)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in objects.flat):
        raise mismatch
    return objects


def bytes_from_json(data: Any, shape: tuple[int, ...], count: int, name: str) -> np.ndarray:
    flat = np.asarray(data, dtype=object).reshape(-1) if isinstance(data, list) else None
    if flat is None or flat.size != count:
        received = "not a list" if flat is None else f"{flat.size} elements"
        raise InvalidRequestError(
            f"Input {name!r} has shape {list(shape)} ({count} elements) but its data holds "
            f"{received}."
        )
    out = np.empty(count, dtype=object)
    for index, item in enumerate(flat.tolist()):
        if not isinstance(item, str):
            raise InvalidRequestError(
                f"Input {name!r} has datatype BYTES but element {index} is {item!r:.40}, not a "
                "string. Send raw bytes with the binary extension."
            )
        out[index] = item.encode("utf-8")
    return out.reshape(shape)


def from_binary(
    chunk: memoryview, shape: tuple[int, ...], dtype: np.dtype[Any], name: str
) -> np.ndarray:
    count = math.prod(shape)
    if dtype.kind == "O":
        return bytes_from_binary(chunk, shape, count, name)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InvalidRequestError(
            f"Input {name!r} has shape {list(shape)} {dtype} ({expected} bytes) but "
            f"binary_data_size is {len(chunk)}."
        )
    if dtype.kind == "b" and count and np.frombuffer(chunk, np.uint8).max() > 1:
        raise InvalidRequestError(f"Input {name!r} is BOOL but holds bytes other than 0 and 1.")
    return np.frombuffer(chunk, dtype.newbyteorder("<")).reshape(shape)


def bytes_from_binary(
    chunk: memoryview, shape: tuple[int, ...], count: int, name: str
) -> np.ndarray:
    out = np.empty(count, dtype=object)
    offset, raw = 0, bytes(chunk)
    for index in range(count):
        if offset + 4 > len(raw):
            raise InvalidRequestError(
                f"Input {name!r} has shape {list(shape)} ({count} BYTES elements) but its "
                f"binary data ends after {index}."
            )
        (length,) = LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidRequestError(
                f"Input {name!r}: BYTES element {index} declares {length} bytes but only "
                f"{len(raw) - offset} remain."
            )
        out[index] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise InvalidRequestError(
            f"Input {name!r} has {len(raw) - offset} bytes after its {count} BYTES elements."
        )
    return out.reshape(shape)


def to_json(array: np.ndarray, name: str, datatype: str) -> Any:
    if datatype != "BYTES":
        return np.ascontiguousarray(array).reshape(-1)
    try:
        return [as_bytes(item).decode("utf-8") for item in array.reshape(-1).tolist()]
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"Tensor {name!r} holds bytes that are not UTF-8, which JSON cannot carry; "
            "request it with binary_data."
        ) from None


def to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        data = as_bytes(item)
        parts += (LENGTH.pack(len(data)), data)
    return b"".join(parts)


def as_bytes(item: Any) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else bytes(item)
