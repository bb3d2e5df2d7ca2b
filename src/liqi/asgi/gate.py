"""A bound on the requests an app handles at once; the others wait their turn in the event
loop, holding no thread and no database connection.

Why the control plane needs one: a sync route holds its database session (and so a pooled
connection) from its first query until its dependency closes it, and in between FastAPI
hands the route's answer to the thread pool again to validate it. With more requests in
flight than the pool has connections, every worker thread can end up waiting for a
connection that a request parked between two hops holds, and that request waits for a
worker thread: a deadlock until the pool's timeout, then 500s. Keeping the requests in the
handler below the pool's size (minus what the background loops use) rules it out.

A slot is freed when the response starts (the route's session is closed by then), so a long
download does not hold one; paths matching ``exempt`` (streamed uploads, which hold a session
only inside one thread hop) never take one.
"""

from __future__ import annotations

import asyncio
import re

from liqi.asgi.types import ASGIApp, Message, Receive, Scope, Send


class ConcurrencyGate:
    """Lets at most ``limit`` HTTP requests into ``app`` at once (FIFO); queues the rest."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt: re.Pattern[str] | None = None):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        self.app = app
        self.limit = limit
        self.exempt = exempt
        self._slots: asyncio.Semaphore | None = None  # made on the server's loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt and self.exempt.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        slots = self._slots
        await slots.acquire()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                slots.release()

        async def send_and_release(message: Message) -> None:
            if message["type"] == "http.response.start":
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_and_release)
        finally:
            release()
