"""The one error hierarchy of liqi, shared by the server, the SDK and the CLI.

Every class carries its own presentation: a stable machine-readable ``code`` (part of the
API), the ``http_status`` the control plane answers with, and the ``exit_code`` the CLI exits
with. The server turns any :class:`LiqiError` into ``{"code": ..., "message": ...}``; the SDK
turns that body back into the same class (:func:`error_from_body`).

::

    LiqiError (internal, 500)
    ├── ConfigError (config_invalid, 400, exit 2)
    │   └── PlaceholderError (config_placeholder)
    ├── InvalidRequestError (invalid_request, 400, exit 2)
    │   ├── ArchiveError (archive_invalid): an archive that cannot be unpacked safely
    │   ├── MethodNotAllowedError (method_not_allowed, 405)
    │   └── RangeNotSatisfiableError (range_not_satisfiable, 416)
    ├── AuthenticationError (unauthenticated, 401, exit 3)
    │   ├── SignatureMismatchError (signature_mismatch)
    │   ├── RequestExpiredError (request_expired)
    │   └── RequestReplayedError (request_replayed)
    ├── PermissionDeniedError (permission_denied, 403, exit 3)
    ├── NotFoundError (not_found, 404, exit 4)
    │   ├── ProjectNotFoundError (project_not_found)
    │   ├── AccessKeyNotFoundError (access_key_not_found)
    │   ├── BucketNotFoundError (bucket_not_found)
    │   └── ObjectNotFoundError (object_not_found)
    ├── ConflictError (conflict, 409, exit 5)
    │   ├── AlreadyExistsError (already_exists)
    │   └── ServerAlreadyRunningError (server_already_running)
    ├── PayloadTooLargeError (payload_too_large, 413, exit 2)
    ├── RequestTimeoutError (request_timeout, 408, exit 6): a body not received in time
    ├── OverloadedError (overloaded, 503, exit 6): a model's queue is full; retry later
    ├── DeadlineExceededError (deadline_exceeded, 504, exit 6): a request ran out of time
    ├── ModelLoadError (model_load_failed, 500): a model version could not be loaded
    ├── ModelError (model_error, 500): the model failed on a request
    ├── StoreError (store_error, 502, exit 7): the storage system failed (S3 down, I/O error)
    │   ├── StorageFullError (storage_full, 507): the store's disk is full
    │   └── BackendUnavailableError (backend_unavailable): an optional package is missing
    ├── ServerUnavailableError (server_unavailable, 503, exit 6)
    │   ├── ServerStartError (server_start_failed)
    │   ├── PortInUseError (port_in_use)
    │   ├── DatabaseUnavailableError (database_unavailable)
    │   ├── ResourceGroupUnavailableError (resource_group_unavailable): a job's Ray cluster
    │   │   does not answer
    │   └── ModelUnavailableError (model_unavailable): no version of the model is ready
    ├── BackendError (backend_error, 500): a backend could not start a job's tasks or an instance
    ├── UploadCancelledError (upload_cancelled, 500): a job killed while its outputs uploaded
    ├── StagingCancelledError (staging_cancelled, 500): an instance's staging was stopped
    ├── SecretKeyMismatchError (secret_key_mismatch, 500): secret.key does not fit the database
    ├── UnexpectedResponseError (unexpected_response, 502, exit 7): an answer in the wrong protocol
    ├── UpstreamUnavailableError (upstream_unavailable, 502, exit 7): the gateway lost an instance
    └── APIError (api_error): an error body from a server the SDK does not know
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "APIError",
    "AccessKeyNotFoundError",
    "AlreadyExistsError",
    "ArchiveError",
    "AuthenticationError",
    "BackendError",
    "BackendUnavailableError",
    "BucketNotFoundError",
    "ConfigError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DeadlineExceededError",
    "InvalidRequestError",
    "LiqiError",
    "MethodNotAllowedError",
    "ModelError",
    "ModelLoadError",
    "ModelUnavailableError",
    "NotFoundError",
    "ObjectNotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PlaceholderError",
    "PortInUseError",
    "ProjectNotFoundError",
    "RangeNotSatisfiableError",
    "RequestExpiredError",
    "RequestReplayedError",
    "RequestTimeoutError",
    "ResourceGroupUnavailableError",
    "ServerAlreadyRunningError",
    "ServerStartError",
    "SecretKeyMismatchError",
    "ServerUnavailableError",
    "SignatureMismatchError",
    "StagingCancelledError",
    "StorageFullError",
    "StoreError",
    "UnexpectedResponseError",
    "UploadCancelledError",
    "UpstreamUnavailableError",
    "error_from_body",
]


class LiqiError(Exception):
    """Base of every error liqi raises on purpose.

    Args:
        message: what happened, the offending value, and how to fix it.
        details: optional structured fields, sent to clients as ``details``.
    """

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})

    def to_body(self) -> dict[str, Any]:
        """The JSON body the control plane answers with."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(LiqiError):
    """A setting, profile or configuration file is missing or wrong."""

    code = "config_invalid"
    http_status = 400
    exit_code = 2


class PlaceholderError(ConfigError):
    """A configuration file still holds a ``${...}`` placeholder."""

    code = "config_placeholder"


class InvalidRequestError(LiqiError):
    """The request is malformed: bad JSON, unknown fields, values of the wrong type."""

    code = "invalid_request"
    http_status = 400
    exit_code = 2


class ArchiveError(InvalidRequestError):
    """An archive (zip or tar) is not one, or holds something liqi does not unpack: a path
    outside its folder, a link, a device, too many entries or too many bytes. Nothing of it
    was unpacked."""

    code = "archive_invalid"


class MethodNotAllowedError(InvalidRequestError):
    """The path exists but does not take this HTTP method."""

    code = "method_not_allowed"
    http_status = 405


class RangeNotSatisfiableError(InvalidRequestError):
    """A byte range outside the object."""

    code = "range_not_satisfiable"
    http_status = 416


class AuthenticationError(LiqiError):
    """The request carries no valid credentials."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 3


class SignatureMismatchError(AuthenticationError):
    """The request's HMAC signature does not match its content."""

    code = "signature_mismatch"


class RequestExpiredError(AuthenticationError):
    """The request's date is too far from the server's clock."""

    code = "request_expired"


class RequestReplayedError(AuthenticationError):
    """The exact same signed request was already received."""

    code = "request_replayed"


class PermissionDeniedError(LiqiError):
    """The credentials are valid but do not allow this action."""

    code = "permission_denied"
    http_status = 403
    exit_code = 3


class NotFoundError(LiqiError):
    """The named object does not exist, or the caller may not see it."""

    code = "not_found"
    http_status = 404
    exit_code = 4


class ProjectNotFoundError(NotFoundError):
    code = "project_not_found"


class AccessKeyNotFoundError(NotFoundError):
    code = "access_key_not_found"


class BucketNotFoundError(NotFoundError):
    code = "bucket_not_found"


class ObjectNotFoundError(NotFoundError):
    code = "object_not_found"


class ConflictError(LiqiError):
    """The request conflicts with the current state."""

    code = "conflict"
    http_status = 409
    exit_code = 5


class AlreadyExistsError(ConflictError):
    code = "already_exists"


class ServerAlreadyRunningError(ConflictError):
    code = "server_already_running"


class PayloadTooLargeError(LiqiError):
    code = "payload_too_large"
    http_status = 413
    exit_code = 2


class RequestTimeoutError(LiqiError):
    """The client did not send the whole request body in time; the connection is closed."""

    code = "request_timeout"
    http_status = 408
    exit_code = 6


class OverloadedError(LiqiError):
    """A model's queue is full: the request was refused at once instead of waiting."""

    code = "overloaded"
    http_status = 503
    exit_code = 6


class DeadlineExceededError(LiqiError):
    """A request ran past its time limit; the server dropped it and keeps serving."""

    code = "deadline_exceeded"
    http_status = 504
    exit_code = 6


class ModelLoadError(LiqiError):
    """A model version could not be loaded; the message says why."""

    code = "model_load_failed"


class ModelError(LiqiError):
    """The model failed on a request (an exception inside it); logged in full on the server."""

    code = "model_error"


class StoreError(LiqiError):
    """The storage system behind a bucket failed; the object is as it was before."""

    code = "store_error"
    http_status = 502
    exit_code = 7


class StorageFullError(StoreError):
    """The disk (or quota) under a bucket is full; the object is as it was before and no
    temporary file is left. Free space and retry."""

    code = "storage_full"
    http_status = 507


class BackendUnavailableError(StoreError):
    """An optional package a backend needs is not installed."""

    code = "backend_unavailable"


class ServerUnavailableError(LiqiError):
    """The liqi server cannot be reached or cannot serve."""

    code = "server_unavailable"
    http_status = 503
    exit_code = 6


class ModelUnavailableError(ServerUnavailableError):
    """No version of the model can answer right now (loading, failed, or unloading)."""

    code = "model_unavailable"


class ServerStartError(ServerUnavailableError):
    code = "server_start_failed"


class PortInUseError(ServerUnavailableError):
    code = "port_in_use"


class DatabaseUnavailableError(ServerUnavailableError):
    code = "database_unavailable"


class ResourceGroupUnavailableError(ServerUnavailableError):
    """A resource group cannot take a job or a service now (its Ray head does not answer);
    nothing was created."""

    code = "resource_group_unavailable"


class BackendError(LiqiError):
    """A backend could not start or reach a job's tasks or a service's instance."""

    code = "backend_error"


class UploadCancelledError(LiqiError):
    """The job was killed while its outputs were uploading; the buckets were restored."""

    code = "upload_cancelled"


class StagingCancelledError(LiqiError):
    """Staging an instance stopped because the instance is no longer wanted."""

    code = "staging_cancelled"


class SecretKeyMismatchError(LiqiError):
    """The server's secret.key cannot decrypt what the database holds."""

    code = "secret_key_mismatch"


class UnexpectedResponseError(LiqiError):
    """A server answered in a format the client did not ask for (HTML, the wrong protocol)."""

    code = "unexpected_response"
    http_status = 502
    exit_code = 7


class UpstreamUnavailableError(LiqiError):
    """The gateway could not reach a service's instance, or the instance broke off its
    answer.

    For the gateway's retry rule: ``sent``: some byte of the request was written to the
    connection, so the instance may have received the request and acted on it; False only
    when none was (the connection could not be made, closed before anything was written, or
    none became free). ``retryable``: no byte of the answer arrived and the failure is the
    connection's or the instance's, so trying again (on another connection or instance) may
    get an answer; whether that is safe is ``sent``'s question. ``stale``: the request went
    out on a reused connection, which closed without answering; the instance itself may be
    fine.
    """

    code = "upstream_unavailable"
    http_status = 502
    exit_code = 7

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool = False,
        sent: bool = True,
        stale: bool = False,
    ) -> None:
        super().__init__(message, details=details)
        self.retryable = retryable
        self.sent = sent
        self.stale = stale


class APIError(LiqiError):
    """An error answer whose ``code`` this version of the SDK does not know."""

    code = "api_error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int = 500,
        server_code: str = "internal",
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.status = http_status
        self.server_code = server_code


def _all_subclasses(cls: type[LiqiError]) -> list[type[LiqiError]]:
    found: list[type[LiqiError]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_all_subclasses(sub))
    return found


_KNOWN: list[type[LiqiError]] = [LiqiError, *_all_subclasses(LiqiError)]
_BY_CODE: dict[str, type[LiqiError]] = {cls.code: cls for cls in _KNOWN if cls is not APIError}


def error_from_body(http_status: int, body: object) -> LiqiError:
    """Rebuild the error a liqi server answered with.

    Args:
        http_status: the HTTP status of the answer.
        body: the decoded JSON body (anything; a non-liqi body becomes an :class:`APIError`).

    Returns:
        An instance of the class whose ``code`` matches, or :class:`APIError`.
    """
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        message = str(body.get("message") or code)
        details = body.get("details") if isinstance(body.get("details"), dict) else None
        cls = _BY_CODE.get(code)
        if cls is not None and cls.http_status == http_status:
            return cls(message, details=details)
        return APIError(message, http_status=http_status, server_code=code, details=details)
    text = str(body)[:500] if body else f"HTTP {http_status}"
    return APIError(f"The server answered HTTP {http_status}: {text}", http_status=http_status)
