"""``/healthz`` (liveness: the process answers) and ``/readyz`` (readiness: send it traffic).

``/readyz`` answers 503 while writes are refused (the log failed, or seals fail and the unsealed
backlog is full), while seals fail, or while identity state cannot be saved, so a load balancer
stops sending traffic; ``/healthz`` stays 200 as long as the process serves, so a supervisor does
not restart a server that is waiting for its storage to come back.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swell.api.state import app_state


async def healthz(request: Request) -> Response:
    started = app_state(request).started
    return JSONResponse({"status": "ok", "uptime_seconds": round(time.monotonic() - started, 3)})


async def readyz(request: Request) -> Response:
    checks = app_state(request).store.readiness()
    ready = all(check["ok"] for check in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
