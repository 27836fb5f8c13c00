"""``GET /metrics``: the app's Prometheus registry (swell.metrics) in the text exposition format.

With SWELL_METRICS_TOKEN set, a scrape must send ``Authorization: Bearer <token>`` (401 without
it, 403 with another); compared in constant time. With SWELL_METRICS_ENABLED=false there is no
instrumentation and /metrics answers 404.
"""

from __future__ import annotations

import hmac
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swell.api.state import app_state
from swell.errors import Forbidden, NotFound, StorageError, Unauthorized

logger = logging.getLogger("swell.api.metrics")


def _check_token(request: Request, token: str) -> None:
    if not token:
        return
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("/metrics needs Authorization: Bearer <SWELL_METRICS_TOKEN>")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Forbidden("Invalid metrics token")


async def metrics(request: Request) -> Response:
    state = app_state(request)
    if state.metrics is None:
        raise NotFound("Metrics are off (SWELL_METRICS_ENABLED=false)")
    _check_token(request, state.settings.metrics_token)
    try:
        state.metrics.front.jobs = await state.store.meta.job_counts()
    except StorageError as exc:  # the rest is still worth scraping; the job series go away
        logger.warning("counting jobs for /metrics failed: %s", exc.message)
        state.metrics.front.jobs = None
    return Response(
        generate_latest(state.metrics.registry),
        media_type=CONTENT_TYPE_LATEST,
        headers={"Cache-Control": "no-store"},
    )


routes = [Route("/metrics", metrics, methods=["GET"])]
