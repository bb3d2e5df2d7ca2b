"""The model server's ASGI app: EAS, TF Serving REST and V2 on one port, plus health and
metrics.

``/api/predict/<name>`` is EAS (a sub-path ``v1/...`` or ``v2/...`` after the name reaches
the TF Serving or V2 routes, so gateways can pass them through), ``/v1/models/...`` TF
Serving, ``/v2...`` the Open Inference Protocol; ``/healthz`` (live), ``/readyz`` (every
model has a version that answered its warm-up call, and the ``--warmup-file`` requests, if
any, were answered) and ``/metrics`` (Prometheus) are open.
With a token, every prediction route needs ``Authorization``: the raw token, ``Bearer
<token>`` or the EAS SDKs' ``EAS <signature>``. Errors are answered in the protocol's own
format; a traceback only ever goes to the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from liqi.asgi.cors import CorsPolicy, with_cors
from liqi.asgi.http import (
    DEFAULT_BODY_TIMEOUT_S,
    Request,
    Response,
    error_response,
    headers_of,
    read_body,
    send_response,
)
from liqi.asgi.tokens import token_accepted, token_error
from liqi.asgi.types import Receive, Scope, Send
from liqi.errors import LiqiError, ModelError, ModelLoadError, NotFoundError
from liqi.protocols import tfserving, v2
from liqi.protocols.tensors import encode_error
from liqi.serving import eas_routes, tfserving_routes, v2_routes
from liqi.serving.manager import ModelManager
from liqi.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE, ServingMetrics
from liqi.serving.warmup import WarmupRequests, replay

log = logging.getLogger(__name__)

EAS_PREFIX = "/api/predict/"


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 64 * 2**20
    request_timeout_s: float = 60.0
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S  # to receive a request's body: then 408


class ServingApp:
    """An ASGI app over a :class:`ModelManager` (which it starts and stops with the
    lifespan).

    It is ready once every model serves and the ``warmup`` requests (if any) were answered;
    ``on_ready`` is called then. With ``on_failed``, a failed first load (see
    :meth:`ModelManager.load_failures`) or warm-up request calls it with the reason instead
    (the server then exits); without it the server stays up, not ready, saying why.
    """

    def __init__(
        self,
        manager: ModelManager,
        *,
        token: str | None = None,
        limits: ServeLimits | None = None,
        metrics: ServingMetrics | None = None,
        on_ready: Callable[[], None] | None = None,
        on_failed: Callable[[str], None] | None = None,
        warmup: WarmupRequests | None = None,
        cors: CorsPolicy | None = None,
    ) -> None:
        self.manager = manager
        self.token = token or None
        self.limits = limits or ServeLimits()
        self.metrics = metrics or ServingMetrics()
        self.metrics.watch(manager)
        self.warmup = warmup
        self.start_error = ""  # why the start-up stopped short of ready (a warm-up failure)
        self._started = False  # the first loads and the warm-up are done
        self._on_ready = on_ready
        self._on_failed = on_failed
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._http = with_cors(self._serve_http, cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        protocol, handler = self._route(path)
        try:
            response = await handler(scope, receive)
        except ConnectionAbortedError:
            return
        except LiqiError as exc:
            response = error_response(exc, json=protocol != "eas")
        except Exception:  # a bug of ours: log it, answer 500, keep serving
            log.exception("unhandled error on %s %s", scope["method"], path)
            error = ModelError("Internal error; the server log has the details.")
            response = error_response(error, json=protocol != "eas")
        await send_response(send, response)
        if protocol != "server":
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(
                response.model, response.version, protocol, response.status, elapsed
            )
            if self._debug:
                log.debug(
                    "%s %s %d %.2fms model=%s version=%s",
                    scope["method"],
                    path,
                    response.status,
                    elapsed * 1000,
                    response.model,
                    response.version,
                )

    # -- routing --------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, Callable[[Scope, Receive], Awaitable[Response]]]:
        if path.startswith(EAS_PREFIX):
            name, _, sub = path[len(EAS_PREFIX) :].partition("/")
            if sub.startswith(("v1/", "v2")):
                return self._route("/" + sub)
            return "eas", lambda scope, receive: self._predict(scope, receive, "eas", path, name)
        if path.startswith("/v1/"):
            return "tfserving", lambda scope, receive: self._predict(
                scope, receive, "tfserving", path
            )
        if path == "/v2" or path.startswith("/v2/"):
            return "v2", lambda scope, receive: self._predict(scope, receive, "v2", path)
        if path == "/healthz":
            return "server", self._healthz
        if path == "/readyz":
            return "server", self._readyz
        if path == "/metrics":
            return "server", self._metrics
        return "server", self._not_found

    async def _predict(
        self, scope: Scope, receive: Receive, protocol: str, path: str, eas_name: str = ""
    ) -> Response:
        """``path`` is the route's own path: a gateway sub-path has its prefix removed."""
        method: str = scope["method"]
        name = eas_name
        try:
            tf_route = v2_route = None
            if protocol == "tfserving":
                tf_route = tfserving.parse_path(path)
                name = tf_route.model if tf_route else ""
            elif protocol == "v2":
                v2_route = v2.parse_path(path)
                if v2_route is None:
                    raise NotFoundError(
                        f"No V2 route {path!r}. Routes: /v2, /v2/health/live|ready, "
                        "/v2/models/<model>[/versions/<version>][/ready|/infer]."
                    )
                name = v2_route.model or ""
            served = self.manager.models.get(name)
            if method == "POST" and served is not None:
                served.check_admission()  # a full queue answers before the body is read
            headers = headers_of(scope)
            body = b""
            if method in ("POST", "PUT"):
                limits = self.limits
                body = await read_body(
                    headers, receive, limits.max_body_bytes, limits.body_timeout_s
                )
            if self.token is not None:
                self._authorize(Request(method, scope["path"], headers, body))
            request = Request(method, path, headers, body)
            if tf_route is not None:
                return await tfserving_routes.handle(self, request, tf_route)
            if v2_route is not None:
                return await v2_routes.handle(self, request, v2_route)
            return await eas_routes.handle(self, request, name)
        except LiqiError as exc:
            response = error_response(exc, json=protocol != "eas")
            response.model = name if name in self.manager.models else ""
            return response

    def _authorize(self, request: Request) -> None:
        assert self.token is not None
        given = request.header("authorization")
        if not token_accepted(
            given,
            self.token,
            method=request.method,
            path=request.path,
            content_type=request.header("content-type"),
            date=request.header("date"),
            body=request.body,
        ):
            raise token_error("", given=bool(given))

    async def _healthz(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, b'{"status":"live"}')

    @property
    def ready(self) -> bool:
        return self._started and self.manager.ready

    async def _readyz(self, scope: Scope, receive: Receive) -> Response:
        if self.ready:
            return Response(200, b'{"status":"ready"}')
        reasons = self.manager.not_ready_reasons()
        if not reasons:  # every model serves: the warm-up is running, or it failed
            warming = (
                f"Warming up with the requests of {self.warmup.source}." if self.warmup else ""
            )
            reasons = [self.start_error or warming or "Starting; retry shortly."]
        return Response(503, orjson.dumps({"status": "not ready", "reasons": reasons}))

    async def _metrics(self, scope: Scope, receive: Receive) -> Response:
        return Response(200, self.metrics.render(), METRICS_CONTENT_TYPE)

    async def _not_found(self, scope: Scope, receive: Receive) -> Response:
        names = ", ".join(sorted(self.manager.models)) or "none"
        message = (
            f"No route {scope['path']!r}. Prediction routes: /api/predict/<model> (EAS), "
            f"/v1/models/<model>:predict (TF Serving), /v2/models/<model>/infer (V2); "
            f"served models: {names}. Also /healthz, /readyz, /metrics."
        )
        return Response(404, encode_error(message))

    # -- lifespan -------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        watcher: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.manager.start()
                except Exception as exc:
                    log.exception("model server failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                watcher = asyncio.create_task(self._start_up(), name="liqi-start-up")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                await self.manager.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start_up(self) -> None:
        await self.manager.polled.wait()
        failures = self.manager.load_failures()
        if failures and self._on_failed is not None:
            self._on_failed("; ".join(failures))
            return
        await self.manager.became_ready.wait()
        if self.warmup is not None:
            for name in self.manager.models:
                try:
                    await replay(self, name, self.warmup)
                except ModelLoadError as exc:
                    log.error("model=%s not ready: %s", name, exc.message)
                    self.start_error = exc.message
                    if self._on_failed is not None:
                        self._on_failed(exc.message)
                    return
        self._started = True
        if self._on_ready is not None:
            self._on_ready()
