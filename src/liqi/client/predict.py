"""``liqi.PredictClient`` and ``liqi.AsyncPredictClient``: call a model service.

The same shape as the EAS Python SDK (``eas_prediction.PredictClient``), so its code ports by
changing the import, plus a direct form over the three protocols of ``liqi serve``::

    with PredictClient("127.0.0.1:8501", "mnist", token="...") as client:
        scores = client.predict({"images": images})["scores"]          # EAS protobuf
        response = client.predict(request)                              # TFRequest -> TFResponse

Bodies, signing, error mapping and retry delays live in :mod:`liqi.client.predict_core`;
this module only moves bytes (httpx, pooled) and sleeps between attempts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, overload

import httpx
from typing_extensions import Self

from liqi.client.eas_requests import StringRequest, StringResponse, TFRequest, TFResponse
from liqi.client.predict_core import (
    Answer,
    Arrays,
    AuthMode,
    Call,
    PredictCodec,
    Protocol,
    RetryPolicy,
)
from liqi.client.signatures import Signature

__all__ = ["AsyncPredictClient", "PredictClient"]

log = logging.getLogger(__name__)

# Connection refused or reset, a connection dropped mid-answer: worth another attempt.
# A read timeout is not: the server may still be working on the request.
_RETRYABLE = (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout)


class _PredictBase:
    """Settings, the EAS SDK's setters, and the lazily fetched signature."""

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        token: str | None = None,
        *,
        protocol: Protocol = "eas",
        auth: AuthMode = "signature",
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        check_inputs: bool = True,
        max_connections: int = 100,
    ) -> None:
        self._codec = PredictCodec(endpoint, service_name, token, protocol=protocol, auth=auth)
        self.timeout_s = timeout_s
        self.retry = RetryPolicy(retries, backoff_s, max_backoff_s)
        self.check_inputs = check_inputs
        self.max_connections = max_connections
        self._signature: Signature | None = None
        self._fetched = False  # whether _signature was asked for

    @property
    def endpoint(self) -> str:
        return self._codec.endpoint

    @property
    def service_name(self) -> str:
        return self._codec.service_name

    @property
    def protocol(self) -> Protocol:
        return self._codec.protocol

    def set_endpoint(self, endpoint: str) -> None:
        self._codec = PredictCodec(
            endpoint,
            self._codec.service_name,
            self._codec.token,
            protocol=self._codec.protocol,
            auth=self._codec.auth,
        )
        self._signature, self._fetched = None, False

    def set_service_name(self, service_name: str) -> None:
        self._codec.service_name = service_name
        self._signature, self._fetched = None, False

    def set_token(self, token: str | None) -> None:
        self._codec.token = token or None

    def set_timeout(self, timeout_ms: int) -> None:
        """The EAS SDK's setter, in milliseconds (``timeout_s`` otherwise)."""
        self.timeout_s = timeout_ms / 1000

    def set_retry_count(self, retries: int) -> None:
        self.retry = RetryPolicy(retries, self.retry.backoff_s, self.retry.max_backoff_s)

    def _limits(self) -> httpx.Limits:
        return httpx.Limits(
            max_connections=self.max_connections, max_keepalive_connections=self.max_connections
        )

    def _prepare(self, request: Any, signature: Signature | None) -> tuple[str, Call]:
        """What to send for ``request``: ``("tf" | "string" | "direct", call)``."""
        codec = self._codec
        if isinstance(request, TFRequest):
            inputs = codec.check_inputs(request.feeds, signature, request.signature_name)
            return "tf", codec.tf_call(inputs, request.signature_name, request.fetches)
        if isinstance(request, StringRequest):
            return "string", codec.call("POST", codec.path("eas"), request.to_string())
        if isinstance(request, Mapping):
            return "direct", codec.direct_call(codec.check_inputs(request, signature, None), None)
        raise TypeError(
            f"predict() takes a TFRequest, a StringRequest or a dict of arrays, not "
            f"{type(request).__name__}."
        )

    def _wants_signature(self, request: Any) -> bool:
        return (
            self.check_inputs and not self._fetched and (isinstance(request, (TFRequest, Mapping)))
        )

    def _read_signature(self, call: Call, answer: Answer) -> Signature | None:
        if answer.status in (401, 403, 404):
            raise self._codec.error(call, answer)
        signature = self._codec.read_signature(answer)
        self._signature, self._fetched = signature, True
        return signature

    def _finish(self, kind: str, call: Call, answer: Answer) -> Any:
        codec = self._codec
        if kind == "string":
            if answer.status >= 400:
                raise codec.error(call, answer)
            return StringResponse(answer.body)
        if answer.status != 200:
            raise codec.error(call, answer)
        if kind == "tf":
            return TFResponse(codec.read_tf(call, answer))
        return codec.read_direct(call, answer, self._signature)

    def _outcome(
        self, call: Call, attempt: int, result: httpx.Response | httpx.HTTPError
    ) -> Answer | float:
        """The answer to return, or how long to wait before the next attempt; raises when
        the call failed for good."""
        if isinstance(result, httpx.Response):
            answer = Answer(result.status_code, result.headers, result.content, attempt + 1)
            if answer.status != 503 or attempt >= self.retry.retries:
                return answer
            delay_s = self.retry.delay_s(attempt, result.headers.get("retry-after"))
            why = "HTTP 503"
        elif isinstance(result, _RETRYABLE):
            if attempt >= self.retry.retries:
                raise self._codec.unreachable(call, result, attempt + 1) from None
            delay_s, why = self.retry.delay_s(attempt), type(result).__name__
        elif isinstance(result, httpx.TimeoutException):
            raise self._codec.timed_out(call, result, self.timeout_s) from None
        else:
            raise self._codec.unreachable(call, result, attempt + 1) from None
        log.info(
            "retrying service=%s url=%s attempt=%d in %.2fs: %s",
            self.service_name,
            call.url,
            attempt + 1,
            delay_s,
            why,
        )
        return delay_s


class PredictClient(_PredictBase):
    """A pooled, thread-safe connection to one model service.

    Args:
        endpoint: ``http://host:port`` (``http://`` may be left out), or a service's endpoint
            as ``liqi eas desc`` prints it (``http://host:port/api/predict/<service>``): the
            other protocols then go to its sub-paths (``.../v1/models/...``, ``.../v2/...``).
        service_name: the service (model) name in the URLs.
        token: the service token; sent as the EAS SDKs' signature (``auth="signature"``,
            the default) or as is (``auth="raw"``).
        protocol: what the direct form ``predict({"name": array})`` speaks: ``"eas"``
            (protobuf), ``"tfserving"`` (REST JSON) or ``"v2"`` (binary tensors).
            ``TFRequest`` and ``StringRequest`` always go to ``/api/predict/<service>``.
        timeout_s: per attempt. ``retries``: extra attempts on 503 and on connection errors
            (never on other statuses), waiting ``backoff_s * 2**n`` or the server's
            ``Retry-After``, at most ``max_backoff_s``.
        check_inputs: fetch the signature once and refuse wrong shapes/dtypes before sending.
    """

    _http: httpx.Client | None = None

    def init(self) -> None:
        """Open the connection pool (done on first use otherwise)."""
        if self._http is None:
            self._http = httpx.Client(
                timeout=self.timeout_s, limits=self._limits(), trust_env=False
            )

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Self:
        self.init()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @overload
    def predict(self, request: TFRequest) -> TFResponse: ...
    @overload
    def predict(self, request: StringRequest) -> StringResponse: ...
    @overload
    def predict(self, request: Mapping[str, Any]) -> Arrays: ...

    def predict(self, request: Any) -> Any:
        """Run one prediction; raises a :mod:`liqi.errors` error on failure."""
        if self._wants_signature(request):
            self.signature()
        kind, call = self._prepare(request, self._signature)
        return self._finish(kind, call, self._send(call))

    def signature(self) -> Signature | None:
        """The service's signature (fetched once), or ``None`` if it does not describe one."""
        if not self._fetched:
            call = self._codec.metadata_call()
            self._read_signature(call, self._send(call))
        return self._signature

    def _send(self, call: Call) -> Answer:
        self.init()
        assert self._http is not None
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.url, content=call.body, headers=call.headers
                )
            except httpx.HTTPError as exc:
                outcome = self._outcome(call, attempt, exc)
            else:
                outcome = self._outcome(call, attempt, response)
            if isinstance(outcome, Answer):
                return outcome
            time.sleep(outcome)
            attempt += 1


class AsyncPredictClient(_PredictBase):
    """:class:`PredictClient` for asyncio (``await client.predict(...)``), on httpx.AsyncClient."""

    _http: httpx.AsyncClient | None = None

    def init(self) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=self.timeout_s, limits=self._limits(), trust_env=False
            )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def __aenter__(self) -> Self:
        self.init()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @overload
    async def predict(self, request: TFRequest) -> TFResponse: ...
    @overload
    async def predict(self, request: StringRequest) -> StringResponse: ...
    @overload
    async def predict(self, request: Mapping[str, Any]) -> Arrays: ...

    async def predict(self, request: Any) -> Any:
        if self._wants_signature(request):
            await self.signature()
        kind, call = self._prepare(request, self._signature)
        return self._finish(kind, call, await self._send(call))

    async def signature(self) -> Signature | None:
        if not self._fetched:
            call = self._codec.metadata_call()
            self._read_signature(call, await self._send(call))
        return self._signature

    async def _send(self, call: Call) -> Answer:
        self.init()
        assert self._http is not None
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.url, content=call.body, headers=call.headers
                )
            except httpx.HTTPError as exc:
                outcome = self._outcome(call, attempt, exc)
            else:
                outcome = self._outcome(call, attempt, response)
            if isinstance(outcome, Answer):
                return outcome
            await asyncio.sleep(outcome)
            attempt += 1
