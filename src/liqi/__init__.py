"""liqi: train, store, serve and call machine-learning models on your own machines.

The SDK names are loaded on first use, so that processes importing a small part of liqi (the
job launcher, the supervisor) do not pay for the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from liqi._version import __version__

if TYPE_CHECKING:
    from liqi import errors
    from liqi.client import (
        AccessKeyInfo,
        AsyncPredictClient,
        Client,
        PredictClient,
        ProjectInfo,
        ServerInfo,
        StringRequest,
        StringResponse,
        TFRequest,
        TFResponse,
    )
    from liqi.errors import LiqiError

__all__ = [
    "AccessKeyInfo",
    "AsyncPredictClient",
    "Client",
    "LiqiError",
    "PredictClient",
    "ProjectInfo",
    "ServerInfo",
    "StringRequest",
    "StringResponse",
    "TFRequest",
    "TFResponse",
    "__version__",
    "errors",
]

_LAZY = {
    "AccessKeyInfo": "liqi.client",
    "AsyncPredictClient": "liqi.client",
    "Client": "liqi.client",
    "PredictClient": "liqi.client",
    "ProjectInfo": "liqi.client",
    "ServerInfo": "liqi.client",
    "StringRequest": "liqi.client",
    "StringResponse": "liqi.client",
    "TFRequest": "liqi.client",
    "TFResponse": "liqi.client",
    "LiqiError": "liqi.errors",
    "errors": "liqi",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'liqi' has no attribute {name!r}")
    if name == "errors":
        return importlib.import_module("liqi.errors")
    return getattr(importlib.import_module(module), name)
