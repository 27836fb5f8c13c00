"""Connection and request bounds for ``swell serve``: no client can hold the server's resources.

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``) but puts no
bound on one that never sends a request, sends its headers a byte at a time, or stalls halfway
through its body, nor on the size of the headers (llhttp has none), nor on the number of open
connections: 1100 idle connections used up the open-file limit and every other client was
refused. :func:`http_protocol` adds those bounds to uvicorn's httptools protocol:

* headers must be complete ``http_header_timeout_seconds`` after the connection opens (or after
  the first byte of the next request on a kept-alive connection), and the whole request read
  ``http_request_timeout_seconds`` after its first byte; past either the connection is closed
  (a 408 first if the client sent part of a request head);
* a request head over ``http_max_header_bytes`` is answered 431 and the connection closed;
* at most ``max_connections`` connections are open: one more makes the server close the
  connection idle the longest (one with no request in progress; slow or silent ones first), and
  if every connection is busy, the new one is answered 503 and closed.

:class:`ConcurrencyLimit` answers 503 (in the surface's error shape, with ``Retry-After``) to
requests beyond ``max_concurrent_requests`` in progress, so a burst queues at the client instead
of in the server's memory. :func:`fit_open_files` raises the open-file limit to fit the
connections.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from swell.api import render
from swell.errors import ServiceUnavailable
from swell.settings import Settings

logger = logging.getLogger("swell.api.server")

#: File descriptors kept free for what is not a connection: SQLite, the log, parts being
#: sealed or read, DSAR spool files, the listening socket.
RESERVED_FILES = 128
_WARN_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout: float
    request_timeout: float
    max_header_bytes: int
    max_connections: int

    @classmethod
    def from_settings(
        cls, settings: Settings, max_connections: int | None = None
    ) -> ConnectionLimits:
        return cls(
            header_timeout=settings.http_header_timeout_seconds,
            request_timeout=settings.http_request_timeout_seconds,
            max_header_bytes=settings.http_max_header_bytes,
            max_connections=max_connections or settings.max_connections,
        )


def _response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


_TIMEOUT = _response(408, "Request Timeout", "Request not received in time")
_TOO_LARGE = _response(431, "Request Header Fields Too Large", "Request header too large")
_BUSY = _response(503, "Service Unavailable", "Too many connections; retry shortly")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the bounds above (``limits`` is set per server)."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._request_deadline = 0.0
        self._in_head = True
        self._head_bytes = 0
        self.last_active = self.loop.time()

    # -- connection ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        if self._in_head:
            # Checked before the parser sees the bytes: it would buffer a head of any size.
            end = data.find(b"\r\n\r\n")
            head = len(data) if end < 0 else end + 4
            if self._head_bytes + head > self.limits.max_header_bytes:
                self._refuse(_TOO_LARGE)
                return
            self._head_bytes += head
        super().data_received(data)

    # -- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._request_deadline = self.loop.time() + self.limits.request_timeout
        if self._timer is None:  # a kept-alive connection's next request: time its head too
            self._arm(self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._in_head = False
        self._head_bytes = 0
        self._arm(max(0.0, self._request_deadline - self.loop.time()))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def on_response_complete(self) -> None:
        self.last_active = self.loop.time()
        super().on_response_complete()

    # -- bounds ----------------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.pipeline:  # a queued request waits for the one before it, not for the client
            self._arm(self.limits.request_timeout)
            return
        if self._in_head and self._head_bytes:
            self._refuse(_TIMEOUT)
        else:  # silent, or stalled in its body: the handler reading it sees a disconnect
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self.transport.write(response)
        self.transport.close()

    @property
    def idle(self) -> bool:
        """No request in progress: before a request's head is complete, or between requests."""
        return (self.cycle is None or self.cycle.response_complete) and not self.pipeline

    def _make_room(self) -> None:
        """Over the connection cap: close the connection idle the longest, or refuse this one."""
        victim: LimitedHttpToolsProtocol | None = None
        for conn in self.connections:
            if (
                conn is not self
                and isinstance(conn, LimitedHttpToolsProtocol)
                and conn.idle
                and not conn.transport.is_closing()
                and (victim is None or conn.last_active < victim.last_active)
            ):
                victim = conn
        if victim is not None:
            victim._disarm()
            victim.transport.close()
            _warn_at_cap(self.limits.max_connections)
        else:
            self._refuse(_BUSY)


_last_warning = [-_WARN_EVERY_S]


def _warn_at_cap(limit: int) -> None:
    now = time.monotonic()
    if now - _last_warning[0] >= _WARN_EVERY_S:
        _last_warning[0] = now
        logger.warning(
            "%d connections open (SWELL_MAX_CONNECTIONS): closing the longest-idle ones", limit
        )


def http_protocol(limits: ConnectionLimits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn (``http=``), bound to ``limits``."""
    return type("SwellHttpProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


def fit_open_files(max_connections: int) -> int:
    """Raise the soft open-file limit as far as needed for ``max_connections`` (up to the hard
    limit); returns the connections that fit, which is less if the hard limit is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return max_connections
    fit = max(1, soft - RESERVED_FILES)
    logger.warning(
        "the open-file limit is %d: serving at most %d connections, not SWELL_MAX_CONNECTIONS=%d",
        soft,
        fit,
        max_connections,
    )
    return fit


class ConcurrencyLimit:
    """ASGI middleware: at most ``limit`` requests in progress; beyond, 503 with Retry-After."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0
        self._warned = -_WARN_EVERY_S

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            now = time.monotonic()
            if now - self._warned >= _WARN_EVERY_S:
                self._warned = now
                logger.warning(
                    "%d requests in progress (SWELL_MAX_CONCURRENT_REQUESTS): answering 503",
                    self.limit,
                )
            error = ServiceUnavailable("Too many requests in progress; retry shortly")
            await render.render(Request(scope), error)(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
