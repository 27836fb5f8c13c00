"""Reading request bodies under a size bound, and parsing forms from the bytes read."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from swell.errors import BadRequest, ClientDisconnected, PayloadTooLarge

logger = logging.getLogger("swell.api")


async def read_body(request: Request, limit: int, message: str | None = None) -> bytes:
    """The request body, refusing (413) anything over ``limit`` bytes without buffering it.

    The bound applies to the bytes as they arrive, whether or not a length was declared.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(message)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(message)
            chunks.append(chunk)
    except ClientDisconnect:
        # A client abort, not a server fault: one line, no traceback (nobody reads the reply).
        logger.info(
            "%s %s: the client disconnected after %d body bytes",
            request.method,
            request.url.path,
            size,
        )
        raise ClientDisconnected() from None
    return b"".join(chunks)


async def parse_multipart(headers: Headers, raw: bytes, max_fields: int) -> dict[str, str]:
    """The text fields of a ``multipart/form-data`` body already read (files are refused)."""

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield raw

    parser = MultiPartParser(
        headers, chunks(), max_files=0, max_fields=max_fields, max_part_size=len(raw) + 1
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise BadRequest(f"Invalid multipart body: {exc.message}") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}
