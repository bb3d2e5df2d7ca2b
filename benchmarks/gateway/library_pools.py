"""Library upstream clients for the gateway benchmark, in place of the hand-written one.

:class:`HttpxUpstreamPool` (httpx.AsyncClient) and :class:`AiohttpUpstreamPool`
(aiohttp.ClientSession) take the gateway's calls to
:class:`liqi.gateway.upstream.UpstreamPool`: ``request(...)`` returning once the answer's
head has arrived, an answer with ``status``, ``headers`` (lower-case names, hop-by-hop ones
dropped), ``done``/``body()`` for an answer that came whole, ``read()`` for a long one,
``close()``; failures as :class:`~liqi.errors.UpstreamUnavailableError`
(``retryable`` when the connection could not be made) or
:class:`~liqi.errors.DeadlineExceededError`.

Each keeps a pool per instance of at most ``max_connections`` connections (one client per
origin, since both libraries' limits are per client or per host) and sends only the headers
it is given plus ``host`` and the body's framing (no User-Agent, Accept, ...). An answer
with a Content-Length of at most 64 KiB is read whole before ``request`` returns, as the
hand-written client hands over an answer that came with its head. They exist to measure
the hand-written client against (``gateway_server.py --client``); they are not the gateway's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Sequence
from typing import Any

import httpx

from liqi.errors import DeadlineExceededError, LiqiError, UpstreamUnavailableError
from liqi.gateway.body import ClientGoneError
from liqi.gateway.upstream import HOP_BY_HOP

Header = tuple[bytes, bytes]
_WHOLE_BYTES = 64 * 2**10  # answers up to this size (by Content-Length) are read whole
_closing: set[asyncio.Future[None]] = set()  # answers given up, closing in the background


class LibraryResponse:
    """An answer in the shape the gateway reads from the hand-written client's."""

    def __init__(self, status: int, headers: list[Header], head_only: bool) -> None:
        self.status = status
        self.headers = headers
        self.sized = any(name == b"content-length" for name, _ in headers)
        self.head_only = head_only
        self.done = False
        self._whole = b""

    def body(self) -> bytes:
        whole, self._whole = self._whole, b""
        return whole

    async def read(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _relayed(raw: Sequence[Header], drop: frozenset[bytes]) -> list[Header]:
    headers = []
    for name, value in raw:
        key = name.lower()
        if key not in drop:
            headers.append((key, value))
    return headers


def _small(headers: list[Header]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.isdigit() and int(value) <= _WHOLE_BYTES
    return False


# -- httpx --------------------------------------------------------------------------------------


class _HttpxResponse(LibraryResponse):
    def __init__(self, response: httpx.Response, drop: frozenset[bytes], head_only: bool) -> None:
        super().__init__(response.status_code, _relayed(response.headers.raw, drop), head_only)
        self._response = response
        self._parts = response.aiter_raw()

    async def read(self) -> bytes:
        try:
            return await self._parts.__anext__()
        except StopAsyncIteration:
            return b""
        except httpx.TimeoutException:
            raise DeadlineExceededError(
                f"The instance at {self._response.url} sent no answer in time."
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(f"The instance broke off its answer: {exc}.") from None

    def close(self) -> None:
        if not self._response.is_closed:
            task = asyncio.ensure_future(self._response.aclose())
            _closing.add(task)
            task.add_done_callback(_closing.discard)


class HttpxUpstreamPool:
    """The gateway's upstream calls on httpx.AsyncClient, one client per instance."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_connections: int = 256,
        idle_timeout_s: float = 4.0,
        drop_headers: frozenset[bytes] = HOP_BY_HOP,
    ) -> None:
        self.timeout = httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=None, pool=connect_timeout_s
        )
        self.limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=idle_timeout_s,
        )
        self.drop_headers = drop_headers
        self._clients: dict[str, tuple[httpx.AsyncClient, httpx.URL]] = {}

    def _client(self, url: str) -> tuple[httpx.AsyncClient, httpx.URL]:
        found = self._clients.get(url)
        if found is None:
            client = httpx.AsyncClient(timeout=self.timeout, limits=self.limits, trust_env=False)
            found = self._clients[url] = (client, httpx.URL(url))
        return found

    async def request(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: Sequence[Header],
        body: bytes | AsyncIterable[bytes] = b"",
        *,
        content_length: int | None = None,
        read_timeout_s: float | None = None,
        fresh: bool = False,
    ) -> LibraryResponse:
        client, base = self._client(url)
        sent = list(headers)
        if content_length is not None and not isinstance(body, bytes):
            sent.append((b"content-length", b"%d" % content_length))
        request = httpx.Request(method, base.copy_with(raw_path=target), headers=sent, content=body)
        if read_timeout_s is not None:
            request.extensions["timeout"] = self.timeout.as_dict() | {"read": read_timeout_s}
        try:
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise UpstreamUnavailableError(
                f"Could not connect to the instance at {url}: {exc}.", retryable=True
            ) from None
        except httpx.TimeoutException:
            raise DeadlineExceededError(
                f"The instance at {url} sent no answer within {self.timeout.read:g} s."
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailableError(
                f"The instance at {url} did not answer: {exc}."
            ) from None
        answer = _HttpxResponse(response, self.drop_headers, method == "HEAD")
        if method == "HEAD" or _small(answer.headers):
            try:
                answer._whole = await response.aread()
            except httpx.HTTPError as exc:
                raise UpstreamUnavailableError(f"The instance at {url} broke off: {exc}.") from None
            answer.done = True
        return answer

    async def close(self) -> None:
        for client, _ in self._clients.values():
            await client.aclose()
        self._clients.clear()


# -- aiohttp ------------------------------------------------------------------------------------


class _AiohttpResponse(LibraryResponse):
    def __init__(self, response: Any, drop: frozenset[bytes], head_only: bool) -> None:
        super().__init__(response.status, _relayed(response.raw_headers, drop), head_only)
        self._response = response

    async def read(self) -> bytes:
        import aiohttp

        try:
            data: bytes = await self._response.content.readany()
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"The instance at {self._response.url} sent no answer in time."
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(f"The instance broke off its answer: {exc}.") from None
        return data

    def close(self) -> None:
        self._response.release()


class AiohttpUpstreamPool:
    """The gateway's upstream calls on aiohttp.ClientSession, one session per instance."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_connections: int = 256,
        idle_timeout_s: float = 4.0,
        drop_headers: frozenset[bytes] = HOP_BY_HOP,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.drop_headers = drop_headers
        self._sessions: dict[str, Any] = {}

    def _session(self, url: str) -> Any:
        import aiohttp

        session = self._sessions.get(url)
        if session is None:
            session = self._sessions[url] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self.max_connections, keepalive_timeout=self.idle_timeout_s
                ),
                timeout=aiohttp.ClientTimeout(
                    connect=self.connect_timeout_s, sock_read=self.read_timeout_s
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
        return session

    async def request(
        self,
        url: str,
        method: str,
        target: bytes,
        headers: Sequence[Header],
        body: bytes | AsyncIterable[bytes] = b"",
        *,
        content_length: int | None = None,
        read_timeout_s: float | None = None,
        fresh: bool = False,
    ) -> LibraryResponse:
        import aiohttp
        import yarl

        session = self._session(url)
        sent = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers]
        if content_length is not None and not isinstance(body, bytes):
            sent.append(("content-length", str(content_length)))
        extra: dict[str, Any] = {}
        if read_timeout_s is not None:
            extra["timeout"] = aiohttp.ClientTimeout(
                connect=self.connect_timeout_s, sock_read=read_timeout_s
            )
        try:
            response = await session.request(
                method,
                yarl.URL(url + target.decode("latin-1"), encoded=True),
                headers=sent,
                data=body if body else None,
                allow_redirects=False,
                **extra,
            )
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise UpstreamUnavailableError(
                f"Could not connect to the instance at {url}: {exc}.", retryable=True
            ) from None
        except asyncio.TimeoutError:
            raise DeadlineExceededError(
                f"The instance at {url} sent no answer within {self.read_timeout_s:g} s."
            ) from None
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (LiqiError, ClientGoneError)):  # from reading the body
                raise cause from None
            raise UpstreamUnavailableError(
                f"The instance at {url} did not answer: {exc}."
            ) from None
        answer = _AiohttpResponse(response, self.drop_headers, method == "HEAD")
        if method == "HEAD" or _small(answer.headers):
            try:
                answer._whole = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise UpstreamUnavailableError(f"The instance at {url} broke off: {exc}.") from None
            answer.done = True
        return answer

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()


POOLS: dict[str, type[HttpxUpstreamPool] | type[AiohttpUpstreamPool]] = {
    "httpx": HttpxUpstreamPool,
    "aiohttp": AiohttpUpstreamPool,
}
