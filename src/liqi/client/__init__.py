"""Python SDK for the liqi control plane and for model services."""

from liqi.client.client import AccessKeyInfo, Client, ProjectInfo, ServerInfo
from liqi.client.eas_requests import StringRequest, StringResponse, TFRequest, TFResponse
from liqi.client.predict import AsyncPredictClient, PredictClient

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
