"""The error hierarchy: stable codes, statuses and exit codes; bodies and their way back."""

from __future__ import annotations

import json

import pytest

from liqi import errors
from liqi.errors import (
    APIError,
    AuthenticationError,
    ConfigError,
    LiqiError,
    NotFoundError,
    PlaceholderError,
    ProjectNotFoundError,
    error_from_body,
)


def _defined_in_liqi_errors() -> list[type[LiqiError]]:
    found: list[type[LiqiError]] = []
    pending: list[type[LiqiError]] = [LiqiError]
    while pending:
        cls = pending.pop()
        if cls.__module__ == "liqi.errors":
            found.append(cls)
        pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: cls.__name__)


ERROR_CLASSES = _defined_in_liqi_errors()
REBUILDABLE = [cls for cls in ERROR_CLASSES if cls is not APIError]

# The public contract, as the module docstring draws it: class, code, HTTP status, exit code.
CONTRACT = [
    ("LiqiError", "internal", 500, 1),
    ("ConfigError", "config_invalid", 400, 2),
    ("PlaceholderError", "config_placeholder", 400, 2),
    ("InvalidRequestError", "invalid_request", 400, 2),
    ("AuthenticationError", "unauthenticated", 401, 3),
    ("SignatureMismatchError", "signature_mismatch", 401, 3),
    ("RequestExpiredError", "request_expired", 401, 3),
    ("RequestReplayedError", "request_replayed", 401, 3),
    ("PermissionDeniedError", "permission_denied", 403, 3),
    ("NotFoundError", "not_found", 404, 4),
    ("ProjectNotFoundError", "project_not_found", 404, 4),
    ("AccessKeyNotFoundError", "access_key_not_found", 404, 4),
    ("ConflictError", "conflict", 409, 5),
    ("AlreadyExistsError", "already_exists", 409, 5),
    ("ServerAlreadyRunningError", "server_already_running", 409, 5),
    ("PayloadTooLargeError", "payload_too_large", 413, 2),
    ("StorageFullError", "storage_full", 507, 7),
    ("ServerUnavailableError", "server_unavailable", 503, 6),
    ("ServerStartError", "server_start_failed", 503, 6),
    ("PortInUseError", "port_in_use", 503, 6),
    ("DatabaseUnavailableError", "database_unavailable", 503, 6),
    ("ResourceGroupUnavailableError", "resource_group_unavailable", 503, 6),
    ("APIError", "api_error", 500, 1),
]


def test_errors_every_class_has_a_unique_code() -> None:
    codes = [cls.code for cls in ERROR_CLASSES]

    assert {name for name, *_ in CONTRACT} <= {cls.__name__ for cls in ERROR_CLASSES}
    assert len(set(codes)) == len(codes), sorted(codes)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=[cls.__name__ for cls in ERROR_CLASSES])
def test_errors_every_class_is_in_the_documented_tree(cls: type[LiqiError]) -> None:
    assert f"{cls.__name__} ({cls.code}" in (errors.__doc__ or "")


def test_errors_every_class_is_exported() -> None:
    exported = {name for name in errors.__all__ if name != "error_from_body"}

    assert exported == {cls.__name__ for cls in ERROR_CLASSES}


@pytest.mark.parametrize(
    ("name", "code", "http_status", "exit_code"), CONTRACT, ids=[row[0] for row in CONTRACT]
)
def test_errors_code_status_and_exit_code_are_stable(
    name: str, code: str, http_status: int, exit_code: int
) -> None:
    cls = getattr(errors, name)

    assert (cls.code, cls.http_status, cls.exit_code) == (code, http_status, exit_code)


# --- to_body ----------------------------------------------------------------------------------


def test_to_body_without_details_has_code_and_message_only() -> None:
    err = ProjectNotFoundError("Project 'mnist' does not exist.")

    assert err.to_body() == {
        "code": "project_not_found",
        "message": "Project 'mnist' does not exist.",
    }


def test_to_body_with_details_includes_them() -> None:
    err = ConfigError("Bad port.", details={"key": "LIQI_PORT", "value": "abc"})

    assert err.to_body() == {
        "code": "config_invalid",
        "message": "Bad port.",
        "details": {"key": "LIQI_PORT", "value": "abc"},
    }


def test_to_body_with_empty_details_leaves_them_out() -> None:
    assert "details" not in ConfigError("Bad port.", details={}).to_body()


def test_errors_details_are_copied() -> None:
    details = {"model": "mnist"}
    err = NotFoundError("No such model.", details=details)
    details["model"] = "changed"

    assert err.to_body()["details"] == {"model": "mnist"}


def test_errors_message_is_the_exception_text() -> None:
    err = PlaceholderError("odps_config.ini line 2: project_name is still the placeholder.")

    assert str(err) == err.message == err.to_body()["message"]
    assert isinstance(err, ConfigError)


# --- error_from_body --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", REBUILDABLE, ids=[cls.__name__ for cls in REBUILDABLE])
def test_error_from_body_rebuilds_the_class_for_its_code_and_status(cls: type[LiqiError]) -> None:
    sent = cls(f"{cls.__name__} happened.", details={"id": 7})
    wire = json.loads(json.dumps(sent.to_body()))

    rebuilt = error_from_body(cls.http_status, wire)

    assert type(rebuilt) is cls
    assert rebuilt.message == f"{cls.__name__} happened."
    assert rebuilt.details == {"id": 7}


def test_error_from_body_without_message_uses_the_code() -> None:
    rebuilt = error_from_body(404, {"code": "not_found"})

    assert type(rebuilt) is NotFoundError
    assert rebuilt.message == "not_found"


@pytest.mark.parametrize(
    "details", ["a string", ["a", "list"], 3, None], ids=["string", "list", "number", "null"]
)
def test_error_from_body_ignores_details_that_are_not_an_object(details: object) -> None:
    rebuilt = error_from_body(401, {"code": "unauthenticated", "message": "m", "details": details})

    assert type(rebuilt) is AuthenticationError
    assert rebuilt.details == {}


def test_error_from_body_unknown_code_is_api_error() -> None:
    rebuilt = error_from_body(
        418, {"code": "teapot", "message": "Short and stout.", "details": {"a": 1}}
    )

    assert type(rebuilt) is APIError
    assert isinstance(rebuilt, APIError)
    assert (rebuilt.status, rebuilt.server_code, rebuilt.message, rebuilt.details) == (
        418,
        "teapot",
        "Short and stout.",
        {"a": 1},
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "not_found"), (400, "project_not_found"), (401, "permission_denied"), (200, "conflict")],
    ids=["not-found-as-500", "subclass-as-400", "forbidden-as-401", "conflict-as-200"],
)
def test_error_from_body_mismatched_status_is_api_error(status: int, code: str) -> None:
    rebuilt = error_from_body(status, {"code": code, "message": "Something."})

    assert type(rebuilt) is APIError
    assert isinstance(rebuilt, APIError)
    assert (rebuilt.status, rebuilt.server_code, rebuilt.message) == (status, code, "Something.")


def test_error_from_body_api_error_code_stays_api_error() -> None:
    rebuilt = error_from_body(500, {"code": "api_error", "message": "Relayed."})

    assert type(rebuilt) is APIError
    assert isinstance(rebuilt, APIError)
    assert rebuilt.server_code == "api_error"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ("Bad Gateway", "Bad Gateway"),
        (["not", "an", "object"], "['not', 'an', 'object']"),
        (42, "42"),
        ({"error": "no code"}, "{'error': 'no code'}"),
        ({"code": 502, "message": "numeric code"}, "{'code': 502, 'message': 'numeric code'}"),
        (None, "HTTP 502"),
        ("", "HTTP 502"),
        ({}, "HTTP 502"),
    ],
    ids=[
        "text",
        "list",
        "number",
        "dict-without-code",
        "non-string-code",
        "null",
        "empty",
        "empty-dict",
    ],
)
def test_error_from_body_non_liqi_body_is_api_error(body: object, text: str) -> None:
    rebuilt = error_from_body(502, body)

    assert type(rebuilt) is APIError
    assert isinstance(rebuilt, APIError)
    assert rebuilt.message == f"The server answered HTTP 502: {text}"
    assert (rebuilt.status, rebuilt.server_code, rebuilt.details) == (502, "internal", {})


def test_error_from_body_long_body_is_cut_to_500_characters() -> None:
    rebuilt = error_from_body(502, "<html>" + "x" * 2000)

    assert rebuilt.message == "The server answered HTTP 502: " + ("<html>" + "x" * 2000)[:500]
