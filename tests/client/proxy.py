"""A recording proxy on 127.0.0.1 in front of a live swell, for the client tests.

It forwards every request unchanged (the Host header too, so the DSAR URLs swell builds point
back at the proxy), logs what it saw and sent, and can be told to answer some requests itself
(a 429, say), to stall a body after some bytes (so a test can kill the client mid-window), or to
flip a byte of the next body (a corrupt download).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}

Rule = Callable[[Request], Response | None]


@dataclass
class Hit:
    method: str
    path: str
    query: str
    range: str | None
    status: int = 0
    #: Body bytes sent to the client.
    sent: int = 0


class Proxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.hits: list[Hit] = []
        self.rules: list[Rule] = []
        #: Stall the next 200 body after this many bytes, until release() (or the proxy stops).
        self.stall_after: int | None = None
        self.stalled = threading.Event()
        self._release = threading.Event()
        #: Flip one byte of the next 200 body at this offset.
        self.corrupt_at: int | None = None
        self._client: httpx.AsyncClient | None = None
        app = Starlette(
            lifespan=self._lifespan,
            routes=[
                Route(
                    "/{path:path}",
                    self._handle,
                    methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
                )
            ],
        )
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1, loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._client = httpx.AsyncClient(timeout=60)
        try:
            yield
        finally:
            await self._client.aclose()

    def start(self) -> Proxy:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("proxy did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.release()
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def release(self) -> None:
        self._release.set()

    def export_hits(self) -> list[Hit]:
        return [h for h in self.hits if h.path == "/api/2/export"]

    async def _handle(self, request: Request) -> Response:
        hit = Hit(request.method, request.url.path, request.url.query, request.headers.get("range"))
        self.hits.append(hit)
        for rule in self.rules:
            answer = rule(request)
            if answer is not None:
                hit.status = answer.status_code
                return answer
        assert self._client is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        # As a reverse proxy says where the client came in (the server is told to trust it).
        headers["x-forwarded-host"] = request.headers.get("host", f"127.0.0.1:{self.port}")
        headers["x-forwarded-proto"] = "http"
        upstream = self._client.build_request(
            request.method,
            self.upstream + request.url.path,
            params=request.url.query,
            headers=headers,
            content=await request.body(),
        )
        response = await self._client.send(upstream, stream=True)
        hit.status = response.status_code
        out_headers = {k: v for k, v in response.headers.items() if k.lower() not in _HOP}
        if "content-length" in response.headers:
            out_headers["content-length"] = response.headers["content-length"]
        stall = None
        if response.status_code == 200 and self.stall_after is not None:
            stall, self.stall_after = self.stall_after, None
        corrupt = None
        if response.status_code == 200 and self.corrupt_at is not None:
            corrupt, self.corrupt_at = self.corrupt_at, None

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    if corrupt is not None and hit.sent <= corrupt < hit.sent + len(chunk):
                        flipped = bytearray(chunk)
                        flipped[corrupt - hit.sent] ^= 0xFF
                        chunk = bytes(flipped)
                    if stall is not None and hit.sent + len(chunk) >= stall:
                        head = chunk[: stall - hit.sent]
                        hit.sent += len(head)
                        yield head
                        self.stalled.set()
                        while not self._release.is_set():
                            await asyncio.sleep(0.02)
                        return
                    hit.sent += len(chunk)
                    yield chunk
            finally:
                with contextlib.suppress(Exception):
                    await response.aclose()

        if request.method == "HEAD":
            await response.aclose()
            return Response(status_code=response.status_code, headers=out_headers)
        return StreamingResponse(body(), status_code=response.status_code, headers=out_headers)
