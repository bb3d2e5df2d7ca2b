"""The gateway: ``/api/predict/<service>[/<sub-path>]`` forwarded to a ready instance.

A raw ASGI app over the :class:`~liqi.gateway.route_table.RouteTable`. Per request: find the
route, check the service's token (raw, ``Bearer`` or the EAS SDKs' signature), pick the
ready instance with the fewest requests in flight, and relay the request (same path and
query, end-to-end headers plus ``x-forwarded-for``, body streamed) and its answer. With no
ready instance, a service that scales from zero is woken and the request held; any other
answers 503.

When an instance fails before any byte of its answer arrived, the request is sent again
(to another instance, or first on a fresh connection to the same one when a reused
connection closed), up to ``MAX_ATTEMPTS`` tries in all and only while its body is still
at hand, in two cases:

- none of its bytes reached the instance: the connection could not be made, or the pool
  found it closed before writing anything (an idle connection the instance closed is
  dropped unused);
- or the service is idempotent (``ServiceRoute.idempotent``): TensorFlow, ONNX and
  scikit-learn models, any built-in processor; a python processor only when its service
  JSON says ``"processor_idempotent": true``.

When it could be sent again but no instance is left to try, the answer is 503, as when the
table lists none (the instances tried are gone or going, and clients retry a 503).

Otherwise (a request written to an instance that then closed the connection without
answering, for a python processor that may have side effects) the gateway answers 502
saying the request may have reached the instance and was not sent again. A failure once
the answer started, and a read timeout (504), are never retried.

Errors the gateway answers itself are text on the EAS path and ``{"error": ...}`` on the
``v1/...`` and ``v2/...`` sub-paths, as the model server answers them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from liqi.asgi.http import error_response, send_response
from liqi.asgi.tokens import signed, token_accepted, token_error
from liqi.asgi.types import ASGIApp, Message, Receive, Scope, Send
from liqi.errors import (
    DeadlineExceededError,
    LiqiError,
    NotFoundError,
    ServerUnavailableError,
    UpstreamUnavailableError,
)
from liqi.gateway.body import ClientGoneError, RequestBody
from liqi.gateway.route_table import RouteTable, ServiceRoute, Upstream
from liqi.gateway.upstream import HOP_BY_HOP, UpstreamPool, UpstreamResponse

log = logging.getLogger(__name__)

PREFIX = "/api/predict/"
MAX_ATTEMPTS = 4
# Request headers not forwarded: hop-by-hop ones, those this hop sets itself (host, framing),
# and expect (the gateway's own server answers 100-continue).
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
# Answer headers not relayed: the gateway's server writes its own date and server.
_NOT_RELAYED = HOP_BY_HOP | {b"date", b"server"}
_NOT_REPEATED = (
    " The request may have reached the instance and was not sent again, because service "
    "{service!r} is not idempotent (a python processor may have side effects). If sending "
    'a request twice is harmless, set "processor_idempotent": true in its service JSON.'
)


class Gateway:
    """The ASGI app for ``/api/predict/...``.

    Args:
        table: the routing table the reconciler fills.
        read_timeout_s: how long an instance may take to start answering (or to send the
            next part of a long answer); then 504.
        connect_timeout_s: how long connecting to an instance may take.
        max_connections: connections kept per instance.
        hold_s: how long a request waits for a service scaled to zero to get an instance.
        poll_interval_s: how often a held request looks at the table.
        retry_body_bytes: bodies up to this size are kept to be sent again on retry.
    """

    def __init__(
        self,
        table: RouteTable,
        *,
        read_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_connections: int = 256,
        hold_s: float = 60.0,
        poll_interval_s: float = 0.02,
        retry_body_bytes: int = 2**20,
    ) -> None:
        self.table = table
        self.pool = UpstreamPool(
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_connections=max_connections,
            drop_headers=_NOT_RELAYED,
        )
        self.hold_s = hold_s
        self.poll_interval_s = poll_interval_s
        self.retry_body_bytes = retry_body_bytes
        self._turn = 0

    async def close(self) -> None:
        await self.pool.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.close)
            return
        if scope["type"] != "http":
            return
        name, _, sub = scope["path"][len(PREFIX) :].partition("/")
        try:
            await self._handle(scope, receive, send, name)
        except LiqiError as exc:  # raised only before the answer started
            await send_response(send, error_response(exc, json=sub.startswith(("v1/", "v2"))))
        except ClientGoneError:
            return
        except Exception:  # a bug of ours: log it, answer 500, keep serving
            log.exception(
                "gateway failed on %s %s service=%s", scope["method"], scope["path"], name
            )
            error = LiqiError("Internal error in the gateway; the server log has the details.")
            await send_response(send, error_response(error, json=sub.startswith(("v1/", "v2"))))

    async def _handle(self, scope: Scope, receive: Receive, send: Send, name: str) -> None:
        table = self.table
        route = table.get(name)
        if route is None:
            # Unsigned: naming the other services would list every project's to anyone.
            raise NotFoundError(
                f"No service {name!r}. `liqi eas list` shows the services your key may use."
            )
        table.count_request(name)
        forwarded, length, authorization = _forwarded_headers(scope)
        body = RequestBody(receive, route.max_body_bytes, self.retry_body_bytes, length)
        if route.token is not None:
            await self._authorize(scope, route, authorization, body)
        upstream = self._pick(route.upstreams, ())
        if upstream is None:
            route, upstream = await self._hold(route)
        await body.start()
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        await self._forward(scope, send, route, upstream, target, forwarded, body)

    async def _authorize(
        self, scope: Scope, route: ServiceRoute, given: bytes | None, body: RequestBody
    ) -> None:
        token = route.token
        assert token is not None
        value = given.decode("latin-1") if given is not None else ""
        if signed(value):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            accepted = token_accepted(
                value,
                token,
                method=scope["method"],
                path=scope["path"],
                content_type=headers.get("content-type", ""),
                date=headers.get("date", ""),
                body=await body.whole(),
            )
        else:
            accepted = token_accepted(value, token, method=scope["method"], path=scope["path"])
        if not accepted:
            raise token_error(route.name, given=bool(value.strip()))

    def _pick(self, upstreams: tuple[Upstream, ...], failed: tuple[str, ...]) -> Upstream | None:
        """The ready instance with the fewest requests in flight; ties take turns."""
        count = len(upstreams)
        if count == 0:
            return None
        if count == 1:
            only = upstreams[0]
            return None if only.instance_id in failed else only
        self._turn = turn = (self._turn + 1) % count
        outstanding = self.table.outstanding
        best: Upstream | None = None
        best_load = 0
        for i in range(count):
            candidate = upstreams[(turn + i) % count]
            if candidate.instance_id in failed:
                continue
            load = outstanding(candidate.instance_id)
            if best is None or load < best_load:
                best, best_load = candidate, load
        return best

    async def _hold(self, route: ServiceRoute) -> tuple[ServiceRoute, Upstream]:
        """Wait for a service scaled to zero to get a ready instance, or raise 503."""
        name = route.name
        if not route.scale_from_zero:
            raise _unavailable(route, f"Service {name!r} has no ready instance")
        log.info("holding a request until an instance is ready service=%s", name)
        self.table.wake(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.hold_s
        while loop.time() < deadline:
            await asyncio.sleep(self.poll_interval_s)
            found = self.table.get(name)
            if found is None:
                raise NotFoundError(f"Service {name!r} was deleted while the request waited.")
            route = found
            upstream = self._pick(route.upstreams, ())
            if upstream is not None:
                return route, upstream
        raise _unavailable(
            route, f"Service {name!r} got no ready instance within {self.hold_s:g} s"
        )

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        route: ServiceRoute,
        upstream: Upstream,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: RequestBody,
    ) -> None:
        table, method = self.table, scope["method"]
        failed: tuple[str, ...] = ()
        fresh = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            table.begin(upstream.instance_id)
            try:
                response = await self.pool.request(
                    upstream.url,
                    method,
                    target,
                    headers,
                    body.content(),
                    content_length=body.length,
                    fresh=fresh,
                )
            except UpstreamUnavailableError as exc:
                table.end(upstream.instance_id)
                tried = (*failed, upstream.instance_id)
                if exc.retryable and exc.sent and not route.idempotent:
                    raise _bad_gateway(route, tried, exc, _NOT_REPEATED) from None
                if not (exc.retryable and body.replayable) or attempt == MAX_ATTEMPTS:
                    raise _bad_gateway(route, tried, exc) from None
                log.warning(
                    "retrying service=%s instance=%s: %s",
                    route.name,
                    upstream.instance_id,
                    exc.message,
                )
                if exc.stale and not fresh:  # the instance may be fine: a new connection
                    fresh = True
                    continue
                fresh = False
                failed += (upstream.instance_id,)
                following = self._pick((table.get(route.name) or route).upstreams, failed)
                if following is None:  # none answers, and the request may be sent again
                    raise _unanswered(route, failed, exc) from None
                upstream = following
                continue
            except DeadlineExceededError as exc:
                table.end(upstream.instance_id)
                log.warning(
                    "no answer in time service=%s instance=%s: %s",
                    route.name,
                    upstream.instance_id,
                    exc.message,
                )
                raise
            except BaseException:
                table.end(upstream.instance_id)
                raise
            try:
                if response.done:  # the common case: the whole answer came with its head
                    data = response.body()
                    headers = response.headers
                    if not (response.sized or response.head_only or response.status in (204, 304)):
                        headers.append((b"content-length", b"%d" % len(data)))
                    await send(
                        {
                            "type": "http.response.start",
                            "status": response.status,
                            "headers": headers,
                        }
                    )
                    await send({"type": "http.response.body", "body": data})
                else:
                    await self._relay(response, send, body, route, upstream)
            finally:
                table.end(upstream.instance_id)
            return

    async def _relay(
        self,
        response: UpstreamResponse,
        send: Send,
        body: RequestBody,
        route: ServiceRoute,
        upstream: Upstream,
    ) -> None:
        """Send a long answer on as it arrives; it never raises once the answer started."""
        headers = response.headers
        # Watch for the client leaving (possible once its body is all read).
        watch = asyncio.ensure_future(body.receive()) if body.finished else None
        if watch is not None:
            watch.add_done_callback(lambda _: response.close())
        try:
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            while True:
                data = await response.read()
                if not data:
                    break
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except LiqiError as exc:
            if watch is None or not watch.done():
                log.warning(
                    "answer broken off service=%s instance=%s: %s",
                    route.name,
                    upstream.instance_id,
                    exc.message,
                )
        finally:
            response.close()
            if watch is not None:
                watch.cancel()


def _forwarded_headers(
    scope: Scope,
) -> tuple[list[tuple[bytes, bytes]], bytes | None, bytes | None]:
    """The headers to send on (plus x-forwarded-for), Content-Length and Authorization."""
    forwarded: list[tuple[bytes, bytes]] = []
    length = authorization = forwarded_for = connection = None
    for pair in scope["headers"]:
        key = pair[0]
        if key in _NOT_FORWARDED or key[:6] == b"proxy-":
            if key == b"content-length":
                length = pair[1]
            elif key == b"connection":
                connection = pair[1]
            continue
        if key == b"authorization":
            authorization = pair[1]
        elif key == b"x-forwarded-for":
            forwarded_for = pair[1]
            continue
        forwarded.append(pair)
    if connection is not None:
        _drop_listed(forwarded, connection)
    client = scope.get("client")
    if client:
        ip = client[0].encode("latin-1")
        forwarded.append((b"x-forwarded-for", forwarded_for + b", " + ip if forwarded_for else ip))
    elif forwarded_for:
        forwarded.append((b"x-forwarded-for", forwarded_for))
    return forwarded, length, authorization


def _drop_listed(forwarded: list[tuple[bytes, bytes]], connection: bytes) -> None:
    """Connection: <header names> marks more hop-by-hop headers (rare)."""
    listed = {token.strip().lower() for token in connection.split(b",")}
    listed -= {b"close", b"keep-alive"}
    if listed:
        forwarded[:] = [pair for pair in forwarded if pair[0] not in listed]


def _unavailable(route: ServiceRoute, what: str) -> ServerUnavailableError:
    reason = f": {route.reason}" if route.reason else "."
    return ServerUnavailableError(f"{what} (state {route.state}){reason}")


def _bad_gateway(
    route: ServiceRoute, tried: tuple[str, ...], exc: UpstreamUnavailableError, note: str = ""
) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(_no_answer(route, tried, exc) + note.format(service=route.name))


def _unanswered(
    route: ServiceRoute, tried: tuple[str, ...], exc: UpstreamUnavailableError
) -> ServerUnavailableError:
    """503 when every instance listed failed before answering and the request could be sent
    again: the service has no instance that answers (one just died, and the reconciler has
    yet to notice), as it has none once the table says so; clients retry a 503."""
    return ServerUnavailableError(_no_answer(route, tried, exc))


def _no_answer(route: ServiceRoute, tried: tuple[str, ...], exc: UpstreamUnavailableError) -> str:
    names = ", ".join(repr(instance_id) for instance_id in tried)
    log.warning("no answer service=%s instances=%s: %s", route.name, names, exc.message)
    what = "instance" if len(tried) == 1 else "instances"
    return f"Service {route.name!r}: no answer from {what} {names}. {exc.message}"


async def _lifespan(
    receive: Receive, send: Send, on_shutdown: Callable[[], Awaitable[None]]
) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def with_gateway(app: ASGIApp, gateway: Gateway) -> ASGIApp:
    """``app`` with ``/api/predict/...`` taken by ``gateway``, ahead of ``app``'s middleware
    (the gateway checks its services' tokens itself). The gateway's connections close when
    the lifespan shuts down."""

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await gateway(scope, receive, send)
        elif scope["type"] == "lifespan":
            await app(scope, _closing(receive, gateway), send)
        else:
            await app(scope, receive, send)

    return dispatch


def _closing(receive: Receive, gateway: Gateway) -> Receive:
    async def receive_closing() -> Message:
        message = await receive()
        if message["type"] == "lifespan.shutdown":
            await gateway.close()
        return message

    return receive_closing
