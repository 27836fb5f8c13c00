"""One access-log line and the request metrics for every HTTP request (ASGI middleware).

The line (logger ``swell.access``, level INFO) has the method, the route *template* (never the
raw path or query string: /identify takes an api_key in its query), the status, the body bytes
sent, the duration in milliseconds, and the project or org the request was authorized for
(:func:`note_subject`). No header, key, secret or user id is ever logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swell.metrics import METHODS, UNMATCHED, Metrics

logger = logging.getLogger("swell.access")

_SUBJECT = "swell.subject"
_EXPORT_ROUTE = "/api/2/export"


def note_subject(
    request: Request, *, project_id: int | None = None, org_id: int | None = None
) -> None:
    """Record whom the request acts for, for its access-log line and per-project metrics."""
    if project_id is not None:
        request.scope[_SUBJECT] = ("project_id", project_id)
    elif org_id is not None:
        request.scope[_SUBJECT] = ("org_id", org_id)


def route_of(scope: Scope) -> str:
    """The matched route's template (``/api/2/dsar/requests/{request_id}``), or "unmatched"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class AccessLog:
    """Outermost middleware: it sees every answer, the 503s of ConcurrencyLimit included."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def send_counting(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            self._done(scope, status, sent, time.perf_counter() - started)

    def _done(self, scope: Scope, status: int, sent: int, seconds: float) -> None:
        route = route_of(scope)
        method = scope.get("method", "")
        method = method if method in METHODS else "OTHER"
        subject: tuple[str, int] | None = scope.get(_SUBJECT)
        if self.metrics is not None:
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(seconds)
            if route == _EXPORT_ROUTE and subject is not None and sent:
                self.metrics.export_bytes.labels(str(subject[1])).inc(sent)
        if self.log and logger.isEnabledFor(logging.INFO):
            extra: dict[str, Any] = {
                "method": method,
                "route": route,
                "status": status,
                "bytes": sent,
                "duration_ms": round(seconds * 1000, 2),
            }
            if subject is not None:
                extra[subject[0]] = subject[1]
            logger.info("%s %s %d", method, route, status, extra=extra)
