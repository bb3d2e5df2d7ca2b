"""The control-plane ASGI app: FastAPI routes behind the signature middleware, and the
gateway (``/api/predict/...``, its own token check) beside them."""

from __future__ import annotations

from fastapi import FastAPI

from liqi._version import __version__
from liqi.asgi.cors import CorsPolicy, with_cors
from liqi.asgi.gate import ConcurrencyGate
from liqi.asgi.types import ASGIApp
from liqi.control.api import router
from liqi.control.api.errors import install_error_handlers
from liqi.control.api.middleware import AuthMiddleware
from liqi.control.api.objects import STREAMED_PATHS
from liqi.control.api.schemas import Health
from liqi.control.db.engine import POOL_OVERFLOW, POOL_SIZE
from liqi.control.server.plane import ControlPlane
from liqi.gateway.app import Gateway, with_gateway

# Requests in the API's routes at once (the rest queue, holding nothing): below the database
# pool's connections, so a route never waits for one that a parked request holds.
MAX_REQUESTS_IN_ROUTES = (POOL_SIZE + POOL_OVERFLOW) * 2 // 3


def build_app(plane: ControlPlane) -> ASGIApp:
    """The whole app: the API, and the gateway over ``plane.routes``; CORS around both when
    the settings allow origins (checked when the server starts)."""
    cors = CorsPolicy.parse(plane.settings.cors_origins)
    return with_cors(with_gateway(build_api(plane), Gateway(plane.routes)), cors)


def build_api(plane: ControlPlane) -> FastAPI:
    app = FastAPI(
        title="liqi control plane",
        version=__version__,
        description="Projects, access keys and everything they own. Every /api request is "
        "signed with an access key (docs/auth.md).",
    )
    app.state.plane = plane
    install_error_handlers(app)
    app.include_router(router)

    @app.get("/healthz")
    def healthz() -> Health:
        return Health(
            status="ok",
            version=__version__,
            pid=plane.pid,
            started_at=plane.started_at,
            uptime_s=plane.uptime_s(),
        )

    # Added first, so it runs inside the authentication (which has read the body by then).
    app.add_middleware(ConcurrencyGate, limit=MAX_REQUESTS_IN_ROUTES, exempt=STREAMED_PATHS)
    app.add_middleware(
        AuthMiddleware,
        authenticator=plane.authenticator,
        prefix="/api/",
        max_body_bytes=plane.settings.max_body_bytes,
        body_timeout_s=plane.settings.body_timeout_s,
        streamed=STREAMED_PATHS,
    )
    return app
