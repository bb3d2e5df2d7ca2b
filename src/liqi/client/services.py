"""SDK methods for model services (EAS's CreateService, UpdateService, DescribeService...):
mixed into :class:`liqi.Client`.

A change (create, modify, scale, stop, start, rollback) only sets what the service should
be; the server's reconciler then starts and stops instances. :meth:`ServiceMethods.wait_service`
polls until the service has settled.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from liqi.core.services import ServiceState
from liqi.errors import DeadlineExceededError, InvalidRequestError, NotFoundError

SETTLED_STATES: frozenset[str] = frozenset(s.value for s in ServiceState if s.is_settled)
POLL_S = 0.2


@dataclass(frozen=True)
class ServiceInstanceInfo:
    id: str
    version: int
    state: str  # STARTING, READY, DRAINING, STOPPING, CRASHED
    url: str
    restarts: int
    reason: str
    started_at: datetime | None
    ready_at: datetime | None


@dataclass(frozen=True)
class ServiceEvent:
    at: datetime
    level: str
    message: str


@dataclass(frozen=True)
class ServiceInfo:
    """A service as ``desc`` shows it. ``instances`` and ``events`` are filled by
    :meth:`~ServiceMethods.get_service` and the change methods, not by ``list_services``;
    ``token`` only by :meth:`~ServiceMethods.create_service`; ``warnings`` (fields accepted
    but not used) only by create and modify."""

    name: str
    project: str
    state: str
    reason: str
    current_version: int
    latest_version: int
    instances_wanted: int
    instances_ready: int
    endpoint: str
    direct_endpoints: list[str]
    token_required: bool
    model_path: str | None
    processor: str | None
    cpu: float | None
    memory_mb: int | None
    autoscaler: dict[str, Any] | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    config: dict[str, Any]
    instances: list[ServiceInstanceInfo]
    events: list[ServiceEvent]
    warnings: list[str]
    token: str | None = None

    @property
    def is_settled(self) -> bool:
        """Nothing is in progress: RUNNING with every wanted instance ready on the current
        version (and no other), STOPPED with no instance left, or FAILED with its reason.

        A change request answers before the reconciler has acted on it, so the state alone
        is not enough: right after ``scale``, a RUNNING service still has the old count.
        """
        if self.state == ServiceState.RUNNING.value:
            return self.instances_ready == self.instances_wanted and all(
                i.version == self.current_version and i.state == "READY" for i in self.instances
            )
        if self.state == ServiceState.STOPPED.value:
            return not self.instances
        if self.state == ServiceState.FAILED.value:
            return bool(self.reason)  # a restart request clears it until the reconciler runs
        return False


@dataclass(frozen=True)
class ServiceVersionInfo:
    version: int
    current: bool
    created_by: str
    created_at: datetime
    config: dict[str, Any]


@dataclass(frozen=True)
class ServiceToken:
    service: str
    token_required: bool
    token: str | None


@dataclass(frozen=True)
class ServiceLogChunk:
    """Part of one instance's log: ``data`` from ``offset - len(data bytes)``; ask again from
    ``offset``. ``final``: the instance has ended and nothing more will come."""

    instance: str
    data: str
    offset: int
    final: bool


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _maybe_when(text: Any) -> datetime | None:
    return _when(text) if isinstance(text, str) else None


def _event(data: Mapping[str, Any]) -> ServiceEvent:
    return ServiceEvent(at=_when(data["at"]), level=data["level"], message=data["message"])


def _instance(data: Mapping[str, Any]) -> ServiceInstanceInfo:
    return ServiceInstanceInfo(
        id=data["id"],
        version=data["version"],
        state=data["state"],
        url=data["url"],
        restarts=data["restarts"],
        reason=data["reason"],
        started_at=_maybe_when(data.get("started_at")),
        ready_at=_maybe_when(data.get("ready_at")),
    )


def _service(data: Mapping[str, Any]) -> ServiceInfo:
    return ServiceInfo(
        name=data["name"],
        project=data["project"],
        state=data["state"],
        reason=data["reason"],
        current_version=data["current_version"],
        latest_version=data["latest_version"],
        instances_wanted=data["instances_wanted"],
        instances_ready=data["instances_ready"],
        endpoint=data["endpoint"],
        direct_endpoints=list(data.get("direct_endpoints", [])),
        token_required=data["token_required"],
        model_path=data.get("model_path"),
        processor=data.get("processor"),
        cpu=data.get("cpu"),
        memory_mb=data.get("memory_mb"),
        autoscaler=data.get("autoscaler"),
        created_by=data["created_by"],
        created_at=_when(data["created_at"]),
        updated_at=_when(data["updated_at"]),
        config=dict(data.get("config", {})),
        instances=[_instance(i) for i in data.get("instances", [])],
        events=[_event(e) for e in data.get("events", [])],
        warnings=list(data.get("warnings", [])),
        token=data.get("token"),
    )


def _version(data: Mapping[str, Any]) -> ServiceVersionInfo:
    return ServiceVersionInfo(
        version=data["version"],
        current=data["current"],
        created_by=data["created_by"],
        created_at=_when(data["created_at"]),
        config=dict(data["config"]),
    )


def load_service_file(path: str | Path) -> dict[str, Any]:
    """Read an EAS service JSON file (``eas_mnist.json``); ``~`` is expanded.

    Raises:
        InvalidRequestError: the file is missing or unreadable, is not JSON (the message
            names the line and column), or is not a JSON object.
    """
    where = Path(path).expanduser()
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidRequestError(f"Service JSON file {str(path)!r} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"Cannot read the service JSON file {str(path)!r}: {exc}."
        ) from None
    return parse_service_json(text, str(path))


def parse_service_json(text: str, source: str = "the service JSON") -> dict[str, Any]:
    """The JSON object in ``text``; InvalidRequestError naming ``source``, the line and the
    column when it is not one."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    if not isinstance(document, dict):
        raise InvalidRequestError(
            f'{source} must hold a JSON object ({{"name": ..., "model_path": ...}}), '
            f"not a {type(document).__name__}."
        )
    return document


def _document(document: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(document, Path):
        return load_service_file(document)
    if isinstance(document, str):
        if document.lstrip().startswith("{"):
            return parse_service_json(document)
        return load_service_file(document)
    return dict(document)


def _path(name: str, *rest: str) -> str:
    return "/".join(["/api/v1/services", quote(name, safe=""), *rest])


class ServiceMethods:
    """Services. Needs ``_request`` and ``project`` from BaseClient."""

    project: str | None

    if TYPE_CHECKING:

        def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def create_service(
        self, document: Mapping[str, Any] | str | Path, project: str | None = None
    ) -> ServiceInfo:
        """Create a service from an EAS service JSON: a dict, a JSON text, or the path of a
        file (a ``str`` that does not start with ``{`` is a path). The answer carries the
        ``token`` (when one is generated) and the ``warnings`` for fields liqi ignores; the
        service starts as CREATING (see :meth:`wait_service`)."""
        body = _document(document)
        params = {"project": project or self.project or "default"}
        return _service(self._request("POST", "/api/v1/services", json=body, params=params))

    def list_services(self, project: str | None = None) -> list[ServiceInfo]:
        params = {"project": project} if project else None
        return [_service(s) for s in self._request("GET", "/api/v1/services", params=params)]

    def get_service(self, name: str) -> ServiceInfo:
        """The service with its instances and latest events; NotFoundError if unknown."""
        return _service(self._request("GET", _path(name)))

    def modify_service(
        self, name: str, patch: Mapping[str, Any] | str | Path, replace: bool = False
    ) -> ServiceInfo:
        """A new version: ``patch`` merged into the current JSON (EAS's ``UpdateType=merge``)
        or, with ``replace``, instead of it. Instances roll over to it."""
        params = {"update_type": "replace" if replace else "merge"}
        answer = self._request("PUT", _path(name), json=_document(patch), params=params)
        return _service(answer)

    def switch_service_version(self, name: str, version: int) -> ServiceInfo:
        """Run an earlier (or later) version again: EAS's UpdateServiceVersion, a rollback."""
        return _service(self._request("PUT", _path(name, "version"), json={"version": version}))

    def list_service_versions(self, name: str) -> list[ServiceVersionInfo]:
        return [_version(v) for v in self._request("GET", _path(name, "versions"))]

    def scale_service(self, name: str, instances: int) -> ServiceInfo:
        return _service(self._request("PUT", _path(name, "scale"), json={"instances": instances}))

    def stop_service(self, name: str) -> ServiceInfo:
        return _service(self._request("PUT", _path(name, "stop")))

    def start_service(self, name: str) -> ServiceInfo:
        return _service(self._request("PUT", _path(name, "start")))

    def delete_service(self, name: str) -> ServiceInfo:
        """Stop the instances and remove the service (state DELETING until it is gone)."""
        return _service(self._request("DELETE", _path(name)))

    def service_token(self, name: str) -> ServiceToken:
        data = self._request("GET", _path(name, "token"))
        return ServiceToken(
            service=data["service"], token_required=data["token_required"], token=data["token"]
        )

    def service_events(self, name: str, limit: int = 100) -> list[ServiceEvent]:
        """The newest ``limit`` events (1 to 1000), oldest first."""
        answer = self._request("GET", _path(name, "events"), params={"limit": limit})
        return [_event(e) for e in answer]

    def service_logs(
        self, name: str, instance: str | None = None, offset: int = 0
    ) -> ServiceLogChunk:
        """A piece of one instance's log (default: the newest instance)."""
        params: dict[str, Any] = {"offset": offset}
        if instance:
            params["instance"] = instance
        data = self._request("GET", _path(name, "logs"), params=params)
        return ServiceLogChunk(
            instance=data["instance"], data=data["data"], offset=data["offset"], final=data["final"]
        )

    def follow_service_logs(
        self,
        name: str,
        instance: str | None = None,
        *,
        follow: bool = True,
        poll_s: float = 0.5,
    ) -> Iterator[ServiceLogChunk]:
        """An instance's log as it is written (non-empty chunks); ends when the instance has
        ended, or once everything written so far is read when ``follow`` is False."""
        offset = 0
        while True:
            chunk = self.service_logs(name, instance, offset)
            instance = instance or chunk.instance or None
            if chunk.data:
                yield chunk
            offset = chunk.offset
            if chunk.final or (not follow and not chunk.data):
                return
            if not chunk.data:
                time.sleep(poll_s)

    def wait_service(
        self,
        name: str,
        *,
        timeout_s: float = 300.0,
        until: Collection[str] = SETTLED_STATES,
        on_change: Callable[[ServiceInfo], None] | None = None,
        poll_s: float = POLL_S,
    ) -> ServiceInfo:
        """Poll the service until it has settled (:attr:`ServiceInfo.is_settled`) in one of
        the states ``until``, and return it. ``on_change`` sees each new (state, reason).

        Raises:
            DeadlineExceededError: still not there after ``timeout_s``; names the state and
                reason.
            NotFoundError: the service does not exist (or is gone).
        """
        deadline = time.monotonic() + timeout_s
        seen: tuple[str, str] | None = None
        while True:
            info = self.get_service(name)
            if on_change is not None and (info.state, info.reason) != seen:
                seen = (info.state, info.reason)
                on_change(info)
            if info.state in until and info.is_settled:
                return info
            if time.monotonic() > deadline:
                raise DeadlineExceededError(
                    f"Service {name!r} is still {info.state} after {timeout_s:g} s"
                    + (f" ({info.reason})" if info.reason else "")
                    + f", waiting for {' or '.join(sorted(until))}. See `liqi eas desc {name}`"
                    f" and `liqi eas logs {name}`."
                )
            time.sleep(max(poll_s, 0.01))

    def wait_service_deleted(
        self,
        name: str,
        *,
        timeout_s: float = 300.0,
        on_change: Callable[[ServiceInfo], None] | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        """Poll until the service is gone (after :meth:`delete_service`).

        Raises:
            DeadlineExceededError: it still exists after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        seen: tuple[str, str] | None = None
        while True:
            try:
                info = self.get_service(name)
            except NotFoundError:
                return
            if on_change is not None and (info.state, info.reason) != seen:
                seen = (info.state, info.reason)
                on_change(info)
            if time.monotonic() > deadline:
                raise DeadlineExceededError(
                    f"Service {name!r} is still {info.state} after {timeout_s:g} s"
                    + (f" ({info.reason})" if info.reason else "")
                    + f", waiting for it to be deleted. See `liqi eas desc {name}`."
                )
            time.sleep(max(poll_s, 0.01))
