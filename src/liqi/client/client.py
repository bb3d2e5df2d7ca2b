"""``liqi.Client``: typed methods over the control-plane HTTP API."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from liqi.client.base import BaseClient
from liqi.client.catalog import CatalogMethods
from liqi.client.jobs import JobMethods
from liqi.client.services import ServiceMethods
from liqi.client.storage import StorageMethods
from liqi.errors import LiqiError


@dataclass(frozen=True)
class ProjectInfo:
    name: str
    description: str
    created_at: datetime
    role: str


@dataclass(frozen=True)
class AccessKeyInfo:
    access_id: str
    name: str
    is_superuser: bool
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    roles: dict[str, str]
    secret: str | None = None


@dataclass(frozen=True)
class ServerInfo:
    version: str
    pid: int
    started_at: datetime
    uptime_s: float
    database: str


def _dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None


def _project(data: Mapping[str, Any]) -> ProjectInfo:
    created = _dt(data["created_at"])
    assert created is not None
    return ProjectInfo(
        name=data["name"], description=data["description"], created_at=created, role=data["role"]
    )


def _key(data: Mapping[str, Any]) -> AccessKeyInfo:
    created = _dt(data["created_at"])
    assert created is not None
    return AccessKeyInfo(
        access_id=data["access_id"],
        name=data["name"],
        is_superuser=data["is_superuser"],
        created_at=created,
        revoked_at=_dt(data.get("revoked_at")),
        last_used_at=_dt(data.get("last_used_at")),
        roles=dict(data.get("roles", {})),
        secret=data.get("secret"),
    )


class Client(StorageMethods, CatalogMethods, JobMethods, ServiceMethods, BaseClient):
    """A connection to a liqi server, signed with one access key.

    Arguments left out come from ``LIQI_*`` environment variables, then from the profile file
    (``LIQI_HOME/config.toml``). Thread-safe; holds a connection pool, so close it (or use it
    as a context manager) when done.

    Raises:
        ConfigError: no access key is configured.
    """

    # -- server ---------------------------------------------------------------------------

    def server_info(self) -> ServerInfo:
        data = self._request("GET", "/api/v1/server")
        started = _dt(data["started_at"])
        assert started is not None
        return ServerInfo(
            version=data["version"],
            pid=data["pid"],
            started_at=started,
            uptime_s=data["uptime_s"],
            database=data["database"],
        )

    def whoami(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/api/v1/whoami")
        return result

    # -- projects -------------------------------------------------------------------------

    def list_projects(self) -> list[ProjectInfo]:
        return [_project(p) for p in self._request("GET", "/api/v1/projects")]

    def get_project(self, name: str) -> ProjectInfo:
        return _project(self._request("GET", f"/api/v1/projects/{quote(name, safe='')}"))

    def create_project(self, name: str, description: str = "") -> ProjectInfo:
        body = {"name": name, "description": description}
        return _project(self._request("POST", "/api/v1/projects", json=body))

    def delete_project(self, name: str) -> None:
        self._request("DELETE", f"/api/v1/projects/{quote(name, safe='')}")

    # -- access keys ----------------------------------------------------------------------

    def list_keys(self, project: str | None = None) -> list[AccessKeyInfo]:
        params = {"project": project} if project else None
        return [_key(k) for k in self._request("GET", "/api/v1/keys", params=params)]

    def create_key(
        self,
        *,
        project: str | None = None,
        role: str = "member",
        name: str = "",
        superuser: bool = False,
    ) -> AccessKeyInfo:
        """Create a key; its ``secret`` is in the result and is not shown again."""
        body = {"project": project, "role": role, "name": name, "superuser": superuser}
        return _key(self._request("POST", "/api/v1/keys", json=body))

    def register_key(
        self,
        access_id: str,
        secret: str,
        *,
        project: str | None,
        role: str = "admin",
        name: str = "",
    ) -> AccessKeyInfo:
        """Register an existing access id/secret pair (superuser only; idempotent)."""
        body = {
            "access_id": access_id,
            "secret": secret,
            "project": project,
            "role": role,
            "name": name,
        }
        return _key(self._request("POST", "/api/v1/keys", json=body))

    def revoke_key(self, access_id: str) -> AccessKeyInfo:
        return _key(self._request("DELETE", f"/api/v1/keys/{quote(access_id, safe='')}"))

    def grant_role(self, access_id: str, project: str, role: str) -> AccessKeyInfo:
        path = f"/api/v1/keys/{quote(access_id, safe='')}/roles/{quote(project, safe='')}"
        return _key(self._request("PUT", path, json={"role": role}))

    def remove_role(self, access_id: str, project: str) -> AccessKeyInfo:
        path = f"/api/v1/keys/{quote(access_id, safe='')}/roles/{quote(project, safe='')}"
        return _key(self._request("DELETE", path))


__all__ = ["AccessKeyInfo", "Client", "LiqiError", "ProjectInfo", "ServerInfo"]
