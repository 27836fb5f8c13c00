"""GET/HEAD /api/2/export: Basic auth -> plan -> a sized, resumable zip stream."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from swell.api.access import note_subject
from swell.api.state import app_state
from swell.backends.base import BlobStore
from swell.errors import StorageError
from swell.export import ExportPlan, parse_range, plan_export, stream_export
from swell.model import hour_start

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)
#: A Range header longer than this is ignored (served whole), never parsed.
MAX_RANGE_HEADER = 256
#: A position with more digits than this is past the end of any archive (2**63 has 19 digits).
#: Bounding it keeps a hostile header away from Python's int-conversion limit.
_MAX_POSITION_DIGITS = 19
_BEYOND = 10**_MAX_POSITION_DIGITS


def _position(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_POSITION_DIGITS else _BEYOND


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) inclusive for a single satisfiable range, None to serve everything,
    or "unsatisfiable"."""
    if not header or len(header) > MAX_RANGE_HEADER:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None  # multi-range or malformed: RFC 9110 lets us ignore Range
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix range: the last N bytes
        length = _position(last_s)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    first = _position(first_s)
    last = min(_position(last_s), size - 1) if last_s else size - 1
    if first >= size or last < first:
        return "unsatisfiable"
    return first, last


def _param(hour: int) -> str:
    return f"{hour_start(hour):%Y%m%dT%H}"


#: Blobs checked at a time before an export starts: each check is a round trip to a remote store.
CHECKS_AT_ONCE = 16


async def _check_blobs(blobs: BlobStore, plan: ExportPlan) -> None:
    """Raise StorageError unless every part's blob is there with the catalog's size."""
    pending = iter(zip(plan.keys, plan.parts, strict=True))

    async def check() -> None:
        for name, part in pending:
            found = (await blobs.head(name)).size
            if found != part.size:
                raise StorageError(f"blob {name!r} has {found} bytes, the catalog says {part.size}")

    checks = [asyncio.ensure_future(check()) for _ in range(min(CHECKS_AT_ONCE, len(plan.parts)))]
    try:
        await asyncio.gather(*checks)
    finally:
        for task in checks:
            task.cancel()


async def export(request: Request) -> Response:
    state = app_state(request)
    principal = await state.auth.check_basic(request.headers.get("authorization"), org=False)
    assert principal.project_id is not None
    return await export_response(request, principal.project_id)


async def export_response(request: Request, project_id: int) -> Response:
    """The Export API's answer for ``project_id`` (already authorized), from the request's
    ``start``, ``end``, ``Range`` and ``If-Range``; the console's download uses it too."""
    state = app_state(request)
    note_subject(request, project_id=project_id)
    start_hour, end_hour = parse_range(
        request.query_params.get("start"), request.query_params.get("end")
    )
    # Read-your-writes: everything acknowledged before now is sealed into the range's parts.
    await state.store.seal_project(project_id, start_hour, end_hour)
    plan = await plan_export(
        state.store.meta,
        project_id,
        start_hour,
        end_hour,
        max_bytes=state.settings.export_max_bytes,
    )
    # Fail before the response starts, never halfway through it: every blob is there, whole.
    await _check_blobs(state.store.blobs, plan)
    # The name is built from the parsed hours, never from the raw parameters: a header can carry
    # only latin-1, and echoing client input into it would let the client shape the header.
    name = f"{project_id}_{_param(start_hour)}_{_param(end_hour)}.zip"
    headers: dict[str, Any] = {
        "ETag": plan.etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-cache",
    }
    wanted = _byte_range(request.headers.get("range"), plan.size)
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != plan.etag:
        wanted = None  # the archive changed since the client's first attempt: send it whole
    if wanted == "unsatisfiable":
        headers["Content-Range"] = f"bytes */{plan.size}"
        return Response(b"", status_code=416, headers=headers)
    status, first, last = 200, 0, plan.size - 1
    if isinstance(wanted, tuple):
        status, (first, last) = 206, wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{plan.size}"
    headers["Content-Length"] = str(last - first + 1)
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers, media_type="application/zip")
    return StreamingResponse(
        stream_export(plan, state.store.blobs, first, last + 1),
        status_code=status,
        headers=headers,
        media_type="application/zip",
    )


routes = [Route("/api/2/export", export, methods=["GET", "HEAD"])]
