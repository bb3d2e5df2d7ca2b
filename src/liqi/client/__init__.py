"""Python SDK for the liqi control plane and for model services.

The prediction clients (numpy, protobuf) load on first use, so control-plane commands do not
pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from liqi.client.client import AccessKeyInfo, Client, ProjectInfo, ServerInfo

if TYPE_CHECKING:
    from liqi.client.eas_requests import StringRequest, StringResponse, TFRequest, TFResponse
    from liqi.client.predict import AsyncPredictClient, PredictClient

_LAZY = {
    "AsyncPredictClient": "liqi.client.predict",
    "PredictClient": "liqi.client.predict",
    "StringRequest": "liqi.client.eas_requests",
    "StringResponse": "liqi.client.eas_requests",
    "TFRequest": "liqi.client.eas_requests",
    "TFResponse": "liqi.client.eas_requests",
}

__all__ = [
    "AccessKeyInfo",
    "AsyncPredictClient",
    "Client",
    "PredictClient",
    "ProjectInfo",
    "ServerInfo",
    "StringRequest",
    "StringResponse",
    "TFRequest",
    "TFResponse",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'liqi.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
