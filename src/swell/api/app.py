"""create_app(settings) -> the ASGI application; the lifespan opens and closes the storage front:
the embedded store, or a scale-out node (swell.node) when the metadata store is PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from swell.api import (
    console,
    dashboard,
    docs,
    dsar,
    export,
    health,
    ingest,
    metrics,
    openapi,
    render,
)
from swell.api.access import AccessLog
from swell.api.server import ConcurrencyLimit
from swell.api.state import AppState, Front
from swell.auth import Authenticator
from swell.backends import Backends
from swell.errors import SwellError
from swell.metrics import Metrics, instrument
from swell.node import is_scale_out, open_node
from swell.settings import Settings
from swell.store import Store


def create_app(
    settings: Settings, *, wrap_backends: Callable[[Backends], Backends] | None = None
) -> Starlette:
    """The ASGI app; ``wrap_backends`` may replace the backends the store opens (for tests that
    make them fail)."""

    meters = Metrics() if settings.metrics_enabled else None

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        front: Front
        if is_scale_out(settings):  # a node of the scale-out deployment (swell.node)
            front = await open_node(settings)
            run_jobs, sole_worker = settings.role != "api", False
        else:
            front = await Store.open(settings, wrap=wrap_backends)
            run_jobs, sole_worker = True, True
        app.state.swell = AppState(settings, front, Authenticator(front.meta), metrics=meters)
        if meters is not None:
            instrument(meters, front)
        front.start_background()
        dsar.start(app, front, run_worker=run_jobs, sole_worker=sole_worker)
        try:
            yield
        finally:
            await dsar.stop(app)
            await front.aclose()

    # One access-log line and the request metrics per request (swell.api.access), outermost.
    access = (
        [Middleware(AccessLog, metrics=meters, log=settings.access_log)]
        if meters is not None or settings.access_log
        else []
    )
    return Starlette(
        routes=[
            *health.routes,
            *metrics.routes,
            *ingest.routes,
            *export.routes,
            *dsar.routes,
            *dashboard.routes,
            *openapi.routes(dsar.OPENAPI_PATHS),
            *console.routes,
            *docs.routes,
        ],
        lifespan=lifespan,
        middleware=[
            *access,
            # Beyond this many requests in progress, 503 at once (swell.api.server).
            Middleware(ConcurrencyLimit, limit=settings.max_concurrent_requests),
            # Browser SDKs post events cross-origin, as they do to Amplitude.
            Middleware(
                CORSMiddleware, allow_origins=["*"], allow_methods=["*"], allow_headers=["*"]
            ),
        ],
        exception_handlers={
            SwellError: render.swell_error,
            HTTPException: render.http_error,
            Exception: render.unexpected_error,
        },
    )
