"""The sans-IO half of :class:`~liqi.client.predict.PredictClient`.

:class:`PredictCodec` turns a call into a :class:`Call` (URL, body, signed headers) and an
:class:`Answer` (status, headers, body) back into arrays or a :mod:`liqi.errors` error;
:class:`RetryPolicy` says how long to wait before the next attempt. The sync and async
clients only move bytes and sleep. Bodies come from the codecs in :mod:`liqi.protocols`.
"""

from __future__ import annotations

import email.utils
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import orjson

from liqi.client.signatures import Signature, read_signature
from liqi.errors import (
    APIError,
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    LiqiError,
    MethodNotAllowedError,
    ModelError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServerUnavailableError,
    UnexpectedResponseError,
)
from liqi.protocols import eas, eas_signature, tfserving, v2
from liqi.protocols.tensors import conform_inputs

__all__ = [
    "Answer",
    "AuthMode",
    "Call",
    "PredictCodec",
    "Protocol",
    "RetryPolicy",
    "Signature",
    "normalize_endpoint",
]

Protocol = Literal["eas", "tfserving", "v2"]
AuthMode = Literal["signature", "raw"]
PROTOCOLS: tuple[Protocol, ...] = ("eas", "tfserving", "v2")
Arrays = dict[str, np.ndarray]

_JSON = "application/json"
_HEADER_LENGTH = "inference-header-content-length"
_ERRORS: dict[int, type[LiqiError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    413: PayloadTooLargeError,
    500: ModelError,
    503: OverloadedError,
    504: DeadlineExceededError,
}


def normalize_endpoint(endpoint: str) -> str:
    """``host:port``, ``http://host:port/`` -> ``http://host:port`` (no trailing slash)."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise InvalidRequestError("The endpoint is empty. Pass e.g. 'http://127.0.0.1:8501'.")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: attempt ``n`` (0-based) waits
    ``backoff_s * 2**n``, at most ``max_backoff_s``, or longer if the server's
    ``Retry-After`` (seconds) asks for it, up to ``max_backoff_s`` as well."""

    retries: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 10.0

    def delay_s(self, attempt: int, retry_after: str | None = None) -> float:
        delay = self.backoff_s * 2.0**attempt
        hint = _retry_after_s(retry_after)
        if hint is not None:
            delay = max(delay, hint)
        return max(0.0, min(delay, self.max_backoff_s))


def _retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number, or an HTTP date (seconds from now)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return (when - datetime.now(timezone.utc)).total_seconds()


@dataclass(frozen=True, eq=False)
class Call:
    method: str
    url: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True, eq=False)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes
    attempts: int = 1

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class PredictCodec:
    """Calls for one service: paths, bodies, auth headers; answers to results or errors."""

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        token: str | None,
        *,
        protocol: Protocol,
        auth: AuthMode,
        now: Callable[[], str] = lambda: email.utils.formatdate(usegmt=True),
    ) -> None:
        if protocol not in PROTOCOLS:
            raise InvalidRequestError(
                f"Unknown protocol {protocol!r}. Use one of: {', '.join(PROTOCOLS)}."
            )
        if auth not in ("signature", "raw"):
            raise InvalidRequestError(f"Unknown auth {auth!r}. Use 'signature' or 'raw'.")
        self.endpoint = normalize_endpoint(endpoint)
        # What the endpoint holds after the host (a gateway's /api/predict/<service>): part of
        # every signed path, as the server sees the whole path.
        self._path_prefix = urllib.parse.urlsplit(self.endpoint).path
        self.service_name = service_name
        self.token = token or None
        self.protocol: Protocol = protocol
        self.auth: AuthMode = auth
        self._now = now

    # -- requests ------------------------------------------------------------------------

    def path(self, protocol: Protocol, *, metadata: bool = False) -> str:
        name = self.service_name
        if protocol == "eas":
            # A service's endpoint as `liqi eas desc` prints it is already the EAS route.
            at_service = self._path_prefix.endswith(f"/api/predict/{name}")
            return "" if at_service else f"/api/predict/{name}"
        if protocol == "tfserving":
            return f"/v1/models/{name}/metadata" if metadata else f"/v1/models/{name}:predict"
        return f"/v2/models/{name}" if metadata else f"/v2/models/{name}/infer"

    def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str = eas.DEFAULT_CONTENT_TYPE,
        extra: Mapping[str, str] | None = None,
    ) -> Call:
        headers = {"Content-Type": content_type, **(extra or {})}
        if self.token is not None:
            if self.auth == "raw":
                headers["Authorization"] = self.token
            else:
                headers.update(
                    eas_signature.sign_request(
                        token=self.token,
                        body=body,
                        date=self._now(),
                        path=self._path_prefix + path,
                        method=method,
                        content_type=content_type,
                    )
                )
        return Call(method, self.endpoint + path, body, headers)

    def metadata_call(self) -> Call:
        return self.call("GET", self.path(self.protocol, metadata=True))

    def tf_call(self, inputs: Arrays, signature: str | None, fetches: list[str]) -> Call:
        body = eas.encode_predict_request(
            inputs, signature_name=signature or "", output_filter=fetches
        )
        return self.call("POST", self.path("eas"), body)

    def direct_call(self, inputs: Arrays, signature: str | None) -> Call:
        path = self.path(self.protocol)
        if self.protocol == "eas":
            return self.tf_call(inputs, signature, [])
        if self.protocol == "tfserving":
            body = tfserving.encode_predict_request(inputs, columnar=True, signature=signature)
            return self.call("POST", path, body, _JSON)
        parameters: dict[str, Any] = {"binary_data_output": True}
        encoded = v2.encode_infer_request(inputs, binary=True, parameters=parameters)
        extra = {}
        if encoded.header_length is not None:
            extra["Inference-Header-Content-Length"] = str(encoded.header_length)
        return self.call("POST", path, encoded.body, encoded.content_type, extra)

    def check_inputs(
        self, inputs: Mapping[str, Any], signature: Signature | None, requested: str | None
    ) -> Arrays:
        """Arrays of the inputs, checked and cast against the signature when it is known."""
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        if signature is None or (requested and requested != signature.name):
            return arrays
        try:
            return conform_inputs(arrays, signature.inputs)
        except InvalidRequestError as exc:
            raise InvalidRequestError(
                f"{exc.message} (checked against the signature {signature.name!r} of service "
                f"{self.service_name!r} before sending; nothing was sent)"
            ) from None

    # -- answers ---------------------------------------------------------------------------

    def error(self, call: Call, answer: Answer) -> LiqiError:
        """The error for a non-2xx answer, with the server's own message."""
        message = _server_message(answer)
        where = f"service {self.service_name!r} at {call.method} {call.url}"
        cls = _ERRORS.get(answer.status)
        details = {"status": answer.status, "url": call.url, "attempts": answer.attempts}
        if answer.status == 503:
            return OverloadedError(
                f"The {where} answered HTTP 503 on all {answer.attempts} attempts; last "
                f"answer: {message}. The service is overloaded or not ready: retry later, "
                "or raise retries=.",
                details=details,
            )
        if answer.status == 401:
            return AuthenticationError(
                f"The {where} refused the token (HTTP 401: {message}). Check the service's "
                "token; use auth='raw' if a gateway does not take the EAS signature.",
                details=details,
            )
        if answer.status == 404:
            return NotFoundError(
                f"The {where} answered HTTP 404: {message}. Check the service name and the "
                "endpoint.",
                details=details,
            )
        if cls is None:
            return APIError(
                f"The {where} answered HTTP {answer.status}: {message}.",
                http_status=answer.status,
                details=details,
            )
        return cls(f"{message} (HTTP {answer.status} from the {where})", details=details)

    def unreachable(self, call: Call, exc: Exception, attempts: int) -> ServerUnavailableError:
        return ServerUnavailableError(
            f"Cannot reach service {self.service_name!r} at {call.url} after {attempts} "
            f"attempt(s) ({type(exc).__name__}: {exc}). Check the endpoint and that the "
            "service is running.",
            details={"url": call.url, "attempts": attempts},
        )

    def timed_out(self, call: Call, exc: Exception, timeout_s: float) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"Service {self.service_name!r} did not answer {call.method} {call.url} within "
            f"{timeout_s:g}s ({type(exc).__name__}). Raise timeout_s= or send fewer rows.",
            details={"url": call.url},
        )

    def unexpected(self, call: Call, answer: Answer, expected: str, why: str) -> LiqiError:
        return UnexpectedResponseError(
            f"The service {self.service_name!r} at {call.url} answered HTTP {answer.status} "
            f"with something that is not {expected} ({why}; Content-Type "
            f"{answer.content_type or 'none'}, body {_preview(answer.body)}). Check that the "
            "endpoint is a liqi/EAS model server and the protocol is right.",
            details={"url": call.url, "status": answer.status},
        )

    def read_tf(self, call: Call, answer: Answer) -> Arrays:
        """A ``PredictResponse`` body's outputs."""
        if answer.content_type.startswith(("text/", _JSON)):
            why = "a protobuf PredictResponse is not text"
            raise self.unexpected(call, answer, "an EAS PredictResponse", why)
        try:
            return eas.decode_predict_response(answer.body).outputs
        except InvalidRequestError as exc:
            raise self.unexpected(call, answer, "an EAS PredictResponse", exc.message) from None

    def read_direct(self, call: Call, answer: Answer, signature: Signature | None) -> Arrays:
        if self.protocol == "eas":
            return self.read_tf(call, answer)
        if self.protocol == "v2":
            length = answer.headers.get(_HEADER_LENGTH)
            try:
                header_length = int(length) if length is not None else None
                return v2.decode_infer_response(answer.body, header_length=header_length).outputs
            except (InvalidRequestError, ValueError) as exc:
                why = exc.message if isinstance(exc, LiqiError) else str(exc)
                raise self.unexpected(call, answer, "a V2 inference response", why) from None
        return self._read_tfserving(call, answer, signature)

    def _read_tfserving(self, call: Call, answer: Answer, signature: Signature | None) -> Arrays:
        document = _json_object(answer.body)
        if document is None or "outputs" not in document:
            why = "no JSON object with 'outputs'"
            raise self.unexpected(call, answer, "a TF Serving predict response", why)
        value = document["outputs"]
        specs = signature.outputs if signature is not None else {}
        if isinstance(value, dict):
            named = value
        else:
            named = {next(iter(specs)) if len(specs) == 1 else "outputs": value}
        arrays = {}
        for name, column in named.items():
            array = tfserving.to_array(column, name)
            spec = specs.get(name)
            if spec is not None and spec.dtype.kind in "biuf" and array.dtype.kind in "biuf":
                array = array.astype(spec.dtype)
            arrays[name] = array
        return arrays

    def read_signature(self, answer: Answer) -> Signature | None:
        """The signature from a metadata answer; ``None`` when it does not describe tensors
        (a custom processor, an unknown format)."""
        document = _json_object(answer.body)
        if answer.status != 200 or document is None:
            return None
        try:
            return read_signature(self.protocol, document)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


# -- helpers -------------------------------------------------------------------------------


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _server_message(answer: Answer) -> str:
    """The server's reason, without its closing period (the client's sentence adds one)."""
    document = _json_object(answer.body)
    if document is not None and isinstance(document.get("error"), str):
        text = str(document["error"])
    elif document is not None and isinstance(document.get("message"), str):
        text = str(document["message"])
    else:
        text = answer.body[:500].decode("utf-8", "replace").strip()
    return text.strip().rstrip(".") or "(empty body)"


def _preview(body: bytes, limit: int = 120) -> str:
    if not body:
        return "(empty)"
    text = body[:limit].decode("utf-8", "replace").strip()
    return repr(text + ("..." if len(body) > limit else ""))
