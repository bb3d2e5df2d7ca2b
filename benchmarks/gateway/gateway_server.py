"""The gateway in a process of its own, for the benchmark: the control plane's uvicorn
settings (`liqi.control.server.runtime.uvicorn_server`: uvloop, httptools) serving `with_gateway`
around a trivial app, with a fixed routing table.

Run: python benchmarks/gateway/gateway_server.py --port 8000 --service mnist \
         --upstream i-1=http://127.0.0.1:8501 [--upstream i-2=http://127.0.0.1:8502] \
         [--client hand-written|httpx|aiohttp]
`GET /healthz` answers 200 once it listens. `--client` swaps the gateway's upstream client
(default: liqi's hand-written one) for a library one from `library_pools.py`, with the same
timeouts and limits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from liqi.control.server.runtime import bind_socket, settle_heap, uvicorn_server
from liqi.gateway.app import Gateway, with_gateway
from liqi.gateway.route_table import RouteTable, ServiceRoute, Upstream

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.gateway.library_pools import POOLS


async def trivial(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """What the control plane's API is to the gateway here: lifespan, and 200 for the rest."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", default="mnist")
    parser.add_argument(
        "--upstream", action="append", required=True, metavar="ID=URL", help="Repeatable."
    )
    parser.add_argument(
        "--client",
        choices=["hand-written", *POOLS],
        default="hand-written",
        help="The upstream client (default: liqi's hand-written one).",
    )
    args = parser.parse_args()
    upstreams = tuple(Upstream(*item.split("=", 1)) for item in args.upstream)
    table = RouteTable()
    table.set(ServiceRoute(name=args.service, token=None, upstreams=upstreams, state="RUNNING"))
    sock = bind_socket("127.0.0.1", args.port)
    gateway = Gateway(table)
    if args.client != "hand-written":
        own = gateway.pool
        gateway.pool = POOLS[args.client](  # type: ignore[assignment]
            connect_timeout_s=own.connect_timeout_s,
            read_timeout_s=own.read_timeout_s,
            max_connections=own.max_connections,
            idle_timeout_s=own.idle_timeout_s,
            drop_headers=own.drop_headers,
        )
    app = with_gateway(trivial, gateway)
    settle_heap()  # as `liqi server run` does
    uvicorn_server(app).run(sockets=[sock])


if __name__ == "__main__":
    main()
