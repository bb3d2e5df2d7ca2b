"""The connection every SDK method goes through: settings, signing, pooling, errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx
from typing_extensions import Self

from liqi.client.auth import SigningAuth
from liqi.config import ClientConfig, resolve_client_config
from liqi.errors import ConfigError, ServerUnavailableError, error_from_body


class BaseClient:
    """A connection to a liqi server, signed with one access key.

    Arguments left out come from ``LIQI_*`` environment variables, then from the profile file
    (``LIQI_HOME/config.toml``). Thread-safe; holds a connection pool, so close it (or use it
    as a context manager) when done.

    Raises:
        ConfigError: no access key is configured.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        access_id: str | None = None,
        access_key: str | None = None,
        project: str | None = None,
        *,
        profile: str | None = None,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config: ClientConfig = resolve_client_config(
            os.environ if environ is None else environ,
            endpoint=endpoint,
            access_id=access_id,
            access_key=access_key,
            project=project,
            profile=profile,
        )
        if not self.config.access_id or not self.config.access_key:
            raise ConfigError(
                "No access key configured. Start a server (`liqi server start` writes a "
                "profile), run `liqi config import odps_config.ini`, or set LIQI_ACCESS_ID and "
                "LIQI_ACCESS_KEY."
            )
        self._http = httpx.Client(
            base_url=self.config.endpoint,
            auth=SigningAuth(self.config.access_id, self.config.access_key),
            timeout=timeout_s,
            transport=transport,
            trust_env=False,
            headers={"user-agent": "liqi-python"},
        )

    @property
    def endpoint(self) -> str:
        return self.config.endpoint

    @property
    def project(self) -> str | None:
        return self.config.project

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            answer = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServerUnavailableError(
                f"Cannot reach the liqi server at {self.endpoint} ({exc.__class__.__name__}: "
                f"{exc}). Start it with `liqi server start` or point LIQI_ENDPOINT at it."
            ) from None
        if answer.status_code == 204:
            return None
        try:
            body = answer.json()
        except ValueError:
            body = answer.text
        if answer.status_code >= 400:
            raise error_from_body(answer.status_code, body)
        return body
