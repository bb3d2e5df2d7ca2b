"""A service's signature, read from the metadata each protocol answers with.

- EAS: ``GET /api/predict/<name>``: ``{"signature_name", "inputs": [{"name", "shape",
  "type": "DT_FLOAT"}], "outputs": [...]}`` (a custom processor answers something else).
- TF Serving: ``GET /v1/models/<name>/metadata``: the SignatureDefMap (``serving_default``,
  else the first signature by name).
- V2: ``GET /v2/models/<name>``: ``{"inputs": [{"name", "datatype", "shape"}], ...}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from liqi.protocols import eas, v2
from liqi.protocols.tensors import TensorSpec

__all__ = ["Signature", "read_signature"]


@dataclass(frozen=True)
class Signature:
    """What the service says it takes and returns (one signature)."""

    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def read_signature(protocol: str, document: dict[str, Any]) -> Signature | None:
    """The signature a metadata document describes, or ``None`` (not tensors).

    Raises:
        KeyError, TypeError, ValueError: the document is not in the protocol's format.
    """
    if protocol == "eas":
        return _eas_signature(document)
    if protocol == "v2":
        return _v2_signature(document)
    return _tfserving_signature(document)


# -- formats -------------------------------------------------------------------------------


def _shape(dims: Any) -> tuple[int | None, ...] | None:
    if dims is None:
        return None
    return tuple(None if int(d) < 0 else int(d) for d in dims)


def _specs(entries: list[dict[str, Any]], dtype_of: Callable[[Any], Any]) -> dict[str, TensorSpec]:
    specs = {}
    for entry in entries:
        dtype = dtype_of(entry)
        if dtype is None:
            raise ValueError(f"no numpy dtype for {entry}")
        specs[entry["name"]] = TensorSpec(entry["name"], np.dtype(dtype), _shape(entry["shape"]))
    return specs


def _eas_signature(document: dict[str, Any]) -> Signature | None:
    if "inputs" not in document:
        return None

    def dtype_of(entry: dict[str, Any]) -> Any:
        return eas.numpy_dtype(entry["type"])

    return Signature(
        str(document.get("signature_name") or ""),
        _specs(document["inputs"], dtype_of),
        _specs(document["outputs"], dtype_of),
    )


def _v2_signature(document: dict[str, Any]) -> Signature:
    def dtype_of(entry: dict[str, Any]) -> Any:
        return v2.DATATYPES.get(entry["datatype"])

    return Signature(
        "", _specs(document["inputs"], dtype_of), _specs(document["outputs"], dtype_of)
    )


def _tfserving_signature(document: dict[str, Any]) -> Signature | None:
    signatures = document["metadata"]["signature_def"]["signature_def"]
    name = "serving_default" if "serving_default" in signatures else min(signatures, default=None)
    if name is None:
        return None

    def entries(tensors: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        for key, info in tensors.items():
            shape = info["tensor_shape"]
            dims = None if shape.get("unknown_rank") else [d["size"] for d in shape["dim"]]
            found.append({"name": key, "shape": dims, "type": info["dtype"]})
        return found

    def dtype_of(entry: dict[str, Any]) -> Any:
        return eas.numpy_dtype(entry["type"])

    sig = signatures[name]
    return Signature(
        name, _specs(entries(sig["inputs"]), dtype_of), _specs(entries(sig["outputs"]), dtype_of)
    )
