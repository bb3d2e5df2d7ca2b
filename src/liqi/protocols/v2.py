"""Open Inference Protocol (KServe V2) REST, with Triton's binary tensor extension.

Formats follow ``reference/peers.md`` b.2: typed tensors (``name``, ``shape``, ``datatype``,
``data`` flat or nested, row-major), request ``parameters`` and requested ``outputs``.

Binary extension: the body's first ``Inference-Header-Content-Length`` bytes are the JSON
header, the rest the raw tensors in input order, each ``parameters.binary_data_size`` bytes
long, little-endian; a BYTES element is a 4-byte little-endian length then its bytes. Decoders
take that header value as ``header_length``; encoders return it next to the body
(``None`` when the body is plain JSON).

The codecs are symmetric: the server uses :func:`decode_infer_request` and
:func:`encode_infer_response`, a client (and the tests) :func:`encode_infer_request` and
:func:`decode_infer_response`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from liqi.errors import InvalidRequestError
from liqi.protocols.tensors import InferenceRequest, InferenceResponse, TensorSpec, load_json
from liqi.protocols.v2_data import (
    DATATYPES,
    from_binary,
    from_json,
    to_binary,
    to_json,
)

__all__ = [
    "DATATYPES",
    "EncodedBody",
    "InferRequest",
    "Route",
    "datatype_of",
    "decode_infer_request",
    "decode_infer_response",
    "encode_health",
    "encode_infer_request",
    "encode_infer_response",
    "encode_model_metadata",
    "encode_server_metadata",
    "parse_path",
]


_NAMES = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
# No body a server takes holds more elements than this; a larger shape is a mistake (and its
# element count would overflow numpy's arithmetic).
MAX_ELEMENTS = 2**40

Verb = Literal["server_metadata", "live", "ready", "model_metadata", "model_ready", "infer"]

_PATH = re.compile(
    r"/v2(?:/health/(?P<health>live|ready)"
    r"|/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/(?P<verb>ready|infer))?)?/?"
)


@dataclass(frozen=True)
class Route:
    """A parsed ``/v2`` path; ``model`` and ``version`` only for the model routes."""

    verb: Verb
    model: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class InferRequest:
    """A decoded ``/infer`` body.

    Attributes:
        inference: the protocol-neutral request.
        id: the client's request ``id``, echoed in the response.
        binary_outputs: outputs the client asked for in binary (``parameters.binary_data``).
        binary_data_output: the request-level ``binary_data_output``: every output in binary.
    """

    inference: InferenceRequest
    id: str | None = None
    binary_outputs: frozenset[str] = field(default_factory=frozenset)
    binary_data_output: bool = False

    @property
    def binary(self) -> bool | frozenset[str]:
        """What to pass as ``binary`` to :func:`encode_infer_response`."""
        return True if self.binary_data_output else self.binary_outputs


@dataclass(frozen=True)
class EncodedBody:
    """Body bytes and, for a binary body, the ``Inference-Header-Content-Length`` value."""

    body: bytes
    header_length: int | None = None

    @property
    def content_type(self) -> str:
        return "application/json" if self.header_length is None else "application/octet-stream"


def parse_path(path: str) -> Route | None:
    """Parse a ``/v2`` path; ``None`` when it is not one of the V2 routes."""
    match = _PATH.fullmatch(path)
    if match is None:
        return None
    if match["health"]:
        return Route(verb="live" if match["health"] == "live" else "ready")
    if match["model"] is None:
        return Route(verb="server_metadata")
    verb: Verb = {"ready": "model_ready", "infer": "infer"}.get(  # type: ignore[assignment]
        match["verb"] or "", "model_metadata"
    )
    return Route(verb=verb, model=match["model"], version=match["version"])


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The V2 datatype of a numpy dtype (bytes, str and object arrays are BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    name = _NAMES.get(dtype.newbyteorder("="))
    if name is None:
        raise InvalidRequestError(
            f"dtype {dtype} has no V2 datatype; supported: {', '.join(DATATYPES)}."
        )
    return name


# -- metadata and health ------------------------------------------------------------------


def encode_server_metadata(name: str, version: str, extensions: Sequence[str] = ()) -> bytes:
    """``GET /v2``: ``{"name", "version", "extensions"}``."""
    return orjson.dumps({"name": name, "version": version, "extensions": list(extensions)})


def encode_model_metadata(
    name: str,
    versions: Sequence[str],
    platform: str,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
) -> bytes:
    """``GET /v2/models/<m>``: name, versions, platform, and typed inputs/outputs (-1 = any)."""

    def spec(tensor: TensorSpec) -> dict[str, Any]:
        shape = [-1 if d is None else d for d in tensor.shape or ()]
        return {"name": tensor.name, "datatype": datatype_of(tensor.dtype), "shape": shape}

    return orjson.dumps(
        {
            "name": name,
            "versions": list(versions),
            "platform": platform,
            "inputs": [spec(t) for t in inputs],
            "outputs": [spec(t) for t in outputs],
        }
    )


def encode_health(verb: Literal["live", "ready"], ok: bool) -> bytes:
    """``{"live": true}`` / ``{"ready": false}``; the status code (200 or 503) says it too."""
    return orjson.dumps({verb: ok})


# -- infer: decode ------------------------------------------------------------------------


def decode_infer_request(
    body: bytes, *, model: str, version: str | None = None, header_length: int | None = None
) -> InferRequest:
    """Decode an ``/infer`` body, JSON or binary (when ``header_length`` is given)."""
    document, blob = _split(body, header_length, "inference request")
    entries = document.get("inputs")
    if not isinstance(entries, list) or not entries:
        raise InvalidRequestError("'inputs' must be a non-empty list of tensors.")
    inputs = _decode_tensors(entries, blob, "input", binary=header_length is not None)
    requested = document.get("outputs")
    outputs: tuple[str, ...] | None = None
    binary_outputs: set[str] = set()
    if requested is not None:
        if not isinstance(requested, list):
            raise InvalidRequestError("'outputs' must be a list of {\"name\": ...} objects.")
        names = []
        for entry in requested:
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InvalidRequestError(
                    f"Each requested output needs a string 'name', received {entry!r:.60}."
                )
            names.append(entry["name"])
            if _parameters(entry, f"output {entry['name']!r}").get("binary_data") is True:
                binary_outputs.add(entry["name"])
        outputs = tuple(names)
    parameters = _parameters(document, "request")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidRequestError(f"'id' must be a string, received {request_id!r:.40}.")
    inference = InferenceRequest(
        model=model, version=version, inputs=inputs, outputs=outputs, parameters=parameters
    )
    return InferRequest(
        inference=inference,
        id=request_id,
        binary_outputs=frozenset(binary_outputs),
        binary_data_output=parameters.get("binary_data_output") is True,
    )


def decode_infer_response(body: bytes, *, header_length: int | None = None) -> InferenceResponse:
    """Client side: read an ``/infer`` response (JSON or binary) back into arrays."""
    document, blob = _split(body, header_length, "inference response")
    entries = document.get("outputs")
    if not isinstance(entries, list):
        raise InvalidRequestError("'outputs' must be a list of tensors.")
    model, version = document.get("model_name"), document.get("model_version")
    return InferenceResponse(
        model=model if isinstance(model, str) else "",
        version=version if isinstance(version, str) else None,
        outputs=_decode_tensors(entries, blob, "output", binary=header_length is not None),
    )


def _split(body: bytes, header_length: int | None, what: str) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        return load_json(body, what), b""
    if not 0 < header_length <= len(body):
        raise InvalidRequestError(
            f"Inference-Header-Content-Length is {header_length} but the body has "
            f"{len(body)} bytes; it must be the length of the JSON header at the body's start."
        )
    return load_json(body[:header_length], what), body[header_length:]


def _parameters(entry: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidRequestError(
            f"'parameters' of the {where} must be an object, received {parameters!r:.40}."
        )
    return parameters


def _decode_tensors(
    entries: list[Any], blob: bytes, role: str, *, binary: bool
) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        name, shape, dtype = _header(entry, role)
        if name in tensors:
            raise InvalidRequestError(f"The {role} {name!r} appears twice.")
        size = _parameters(entry, f"{role} {name!r}").get("binary_data_size")
        if size is None:
            if "data" not in entry:
                raise InvalidRequestError(
                    f"The {role} {name!r} has neither 'data' nor 'parameters.binary_data_size'."
                )
            tensors[name] = from_json(entry["data"], shape, dtype, entry["datatype"], name)
            continue
        if "data" in entry:
            raise InvalidRequestError(
                f"The {role} {name!r} has both 'data' and 'parameters.binary_data_size'."
            )
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidRequestError(
                f"binary_data_size of {role} {name!r} must be a byte count, received {size!r}."
            )
        if not binary:
            raise InvalidRequestError(
                f"The {role} {name!r} declares binary_data_size but the request has no "
                "Inference-Header-Content-Length header; send it with the JSON header's length."
            )
        if offset + size > len(blob):
            raise InvalidRequestError(
                f"The binary body is truncated: {role} {name!r} declares binary_data_size "
                f"{size} but only {len(blob) - offset} bytes remain."
            )
        chunk = memoryview(blob)[offset : offset + size]
        tensors[name] = from_binary(chunk, shape, dtype, name)
        offset += size
    if offset != len(blob):
        raise InvalidRequestError(
            f"The binary body has {len(blob) - offset} bytes after the last tensor; the "
            "binary_data_size values must add up to the body length after the JSON header."
        )
    return tensors


def _header(entry: Any, role: str) -> tuple[str, tuple[int, ...], np.dtype[Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidRequestError(
            f"Each {role} must be an object with a string 'name', received {entry!r:.60}."
        )
    name = entry["name"]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidRequestError(
            f"The {role} {name!r} needs 'shape', a list of non-negative integers; "
            f"received {shape!r:.60}."
        )
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise InvalidRequestError(
            f"The {role} {name!r} has shape {shape!r:.80}, more than the {MAX_ELEMENTS} "
            "elements a request can carry; check the shape."
        )
    datatype = entry.get("datatype")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidRequestError(
            f"The {role} {name!r} has unknown datatype {datatype!r:.40}; supported: "
            f"{', '.join(DATATYPES)}."
        )
    return name, tuple(shape), DATATYPES[datatype]


# -- infer: encode ------------------------------------------------------------------------


def encode_infer_response(
    response: InferenceResponse,
    *,
    request_id: str | None = None,
    binary: bool | Collection[str] = False,
    parameters: Mapping[str, Any] | None = None,
) -> EncodedBody:
    """Encode a response; ``binary`` is True (every output) or the output names to send raw."""
    document: dict[str, Any] = {"model_name": response.model}
    if response.version is not None:
        document["model_version"] = response.version
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = dict(parameters)
    document["outputs"], chunks = _encode_tensors(response.outputs, binary)
    return _assemble(document, chunks)


def encode_infer_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary: bool | Collection[str] = False,
    outputs: Mapping[str, bool] | None = None,
    request_id: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> EncodedBody:
    """Client side: an ``/infer`` body; ``outputs`` maps requested names to ``binary_data``."""
    document: dict[str, Any] = {}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = dict(parameters)
    document["inputs"], chunks = _encode_tensors(inputs, binary)
    if outputs is not None:
        document["outputs"] = [
            {"name": name, "parameters": {"binary_data": flag}} for name, flag in outputs.items()
        ]
    return _assemble(document, chunks)


def _assemble(document: dict[str, Any], chunks: list[bytes]) -> EncodedBody:
    header = orjson.dumps(document, option=_OPTIONS)
    if not chunks:
        return EncodedBody(header)
    return EncodedBody(b"".join([header, *chunks]), header_length=len(header))


def _encode_tensors(
    tensors: Mapping[str, np.ndarray], binary: bool | Collection[str]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    entries: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, array in tensors.items():
        datatype = datatype_of(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary is True or (not isinstance(binary, bool) and name in binary):
            chunk = to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = to_json(array, name, datatype)
        entries.append(entry)
    return entries, chunks
