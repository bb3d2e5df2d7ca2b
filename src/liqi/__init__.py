"""liqi: train, store, serve and call machine-learning models on your own machines."""

from liqi import errors
from liqi._version import __version__
from liqi.client import AccessKeyInfo, Client, ProjectInfo, ServerInfo
from liqi.errors import LiqiError

__all__ = [
    "AccessKeyInfo",
    "Client",
    "LiqiError",
    "ProjectInfo",
    "ServerInfo",
    "__version__",
    "errors",
]
