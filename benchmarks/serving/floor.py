"""The floor: a bare ASGI app on uvicorn that answers every request with one fixed JSON body.

It reads the request body to the end first, as a model server must, then answers 200 with
the body given by `--body-file` (the run passes liqi's own 1-row predict answer, so both
servers write the same bytes). No framework, no routing, no parsing: what is left is
uvicorn's HTTP handling, the ceiling any Python server on this machine can reach. It runs
with liqi's uvicorn options: uvloop, httptools, no access log, one worker.

Run: .venv/bin/python benchmarks/serving/floor.py --port 8999 [--body-file answer.json]
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The size of liqi's answer to one MNIST image: {"predictions": [[10 float32 scores]]}.
DEFAULT_BODY = (
    b'{"predictions":[[4.8346998e-8,1.4177291e-8,1.5783606e-8,0.000021353273,0.000027372214,'
    b"0.000021724254,9.048837e-9,0.9989404,0.0000035446458,0.0009855431]]}"
)


def make_app(body: bytes) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    answer = {"type": "http.response.body", "body": body}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send(start)
        await send(answer)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, help="The answer's bytes (default: 154 B).")
    args = parser.parse_args()
    body = args.body_file.read_bytes() if args.body_file else DEFAULT_BODY
    uvicorn.run(
        make_app(body),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        workers=1,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
