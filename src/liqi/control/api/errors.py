"""The one mapper from errors to the control plane's HTTP answers: ``{"code", "message"}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from liqi.control.db.engine import unavailable
from liqi.errors import ConflictError, InvalidRequestError, LiqiError, RequestTimeoutError

logger = logging.getLogger(__name__)


def error_response(exc: LiqiError) -> JSONResponse:
    # A 408 leaves the rest of the body unread: the connection cannot serve another request.
    headers = {"connection": "close"} if isinstance(exc, RequestTimeoutError) else None
    return JSONResponse(exc.to_body(), status_code=exc.http_status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    parts: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) or "body"
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        elif kind == "missing":
            parts.append(f"missing field {where!r}")
        elif kind == "json_invalid":
            ctx = err.get("ctx") or {}
            parts.append(f"malformed JSON ({ctx.get('error', 'cannot parse')})")
        else:
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts) + ". See the API reference at /docs."


def install_error_handlers(app: FastAPI) -> None:
    async def on_liqi_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LiqiError)
        if exc.http_status >= 500:
            logger.error("request failed: %s", exc, exc_info=exc)
        return error_response(exc)

    async def on_validation(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(InvalidRequestError(describe_validation(exc)))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            body = {
                "code": "not_found",
                "message": f"No such endpoint: {request.method} {request.url.path}. See /docs.",
            }
        elif exc.status_code == 405:
            body = {
                "code": "method_not_allowed",
                "message": f"{request.method} is not allowed on {request.url.path}.",
            }
        else:
            body = {"code": "http_error", "message": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code)

    async def on_integrity(_request: Request, exc: Exception) -> Response:
        logger.info("integrity error: %s", exc)
        return error_response(
            ConflictError(
                "The change conflicts with an object that already exists; list and retry."
            )
        )

    async def on_database(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OperationalError)
        logger.error("database failed on %s %s: %s", request.method, request.url.path, exc)
        return error_response(unavailable(exc))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {
                "code": "internal",
                "message": "Internal server error; the server log has the details.",
            },
            status_code=500,
        )

    app.add_exception_handler(LiqiError, on_liqi_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(IntegrityError, on_integrity)
    app.add_exception_handler(OperationalError, on_database)
    app.add_exception_handler(Exception, on_unexpected)
