"""Baseline apps: the physical limits swell is compared against, on the same server stack.

Both run under uvicorn exactly as ``swell serve`` does (one worker, uvloop, httptools):

* ``ingest_app``: POST /2/httpapi reads the body, ``orjson.loads`` it and answers the same JSON
  shape swell answers. Nothing is validated, enriched, logged or fsync'd: the HTTP + JSON floor.
* ``file_app``: GET /file streams one file (``BENCH_FILE``) with an async generator doing 1 MiB
  ``os.pread`` reads, each into a fresh bytes object: what a plain file server on this stack does.
  GET /file?buffers=reuse reads the same bytes into a few reused 1 MiB buffers instead (swell's
  export technique, ``swell.export.BufferPool``), which any file server could adopt too. Both
  honour ``Range: bytes=N-``.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK = 1 << 20


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def httpapi(request: Request) -> Response:
    body = await request.body()
    doc = orjson.loads(body)
    return JSONResponse(
        {
            "code": 200,
            "events_ingested": len(doc["events"]),
            "payload_size_bytes": len(body),
            "server_upload_time": int(time.time() * 1000),
        }
    )


ingest_app = Starlette(
    routes=[
        Route("/2/httpapi", httpapi, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)


async def _pread_stream(path: str, start: int, stop: int) -> AsyncIterator[bytes]:
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = start
        while offset < stop:
            data = os.pread(fd, min(CHUNK, stop - offset), offset)
            if not data:
                raise RuntimeError(f"{path} is shorter than expected")
            offset += len(data)
            yield data
    finally:
        os.close(fd)


async def _reuse_stream(path: str, start: int, stop: int) -> AsyncIterator[memoryview]:
    from swell.export import BufferPool  # here, so that ingest_app's process never loads swell

    pool = BufferPool(min(CHUNK, max(stop - start, 1)))
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = start
        while offset < stop:
            view = memoryview(pool.take())[: min(pool.size, stop - offset)]
            got = os.preadv(fd, [view], offset)
            if got < len(view):
                raise RuntimeError(f"{path} is shorter than expected")
            offset += got
            yield view
            del view  # the pool hands a buffer out again only once nothing references it
    finally:
        os.close(fd)


async def file(request: Request) -> Response:
    path = os.environ["BENCH_FILE"]
    size = os.stat(path).st_size
    status, start = 200, 0
    headers = {"Accept-Ranges": "bytes"}
    wanted = request.headers.get("range", "")
    if wanted.startswith("bytes=") and wanted.endswith("-") and wanted[6:-1].isdigit():
        start = min(int(wanted[6:-1]), size)
        status = 206
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
    headers["Content-Length"] = str(size - start)
    reuse = request.query_params.get("buffers") == "reuse"
    return StreamingResponse(
        (_reuse_stream if reuse else _pread_stream)(path, start, size),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


file_app = Starlette(
    routes=[
        Route("/file", file, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
