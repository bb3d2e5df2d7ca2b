"""Python SDK for the liqi control plane."""

from liqi.client.client import AccessKeyInfo, Client, ProjectInfo, ServerInfo

__all__ = ["AccessKeyInfo", "Client", "ProjectInfo", "ServerInfo"]
