"""GET/HEAD /api/2/export: Basic auth -> plan -> a sized, resumable zip stream."""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from swell.api.state import app_state
from swell.errors import StorageError
from swell.export import parse_range, plan_export, stream_export

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """(first, last) inclusive for a single satisfiable range, None to serve everything,
    or "unsatisfiable"."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # multi-range or malformed: RFC 9110 lets us ignore Range
    first_s, last_s = match.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix range: the last N bytes
        length = int(last_s)
        if length == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    first = int(first_s)
    last = min(int(last_s), size - 1) if last_s else size - 1
    if first >= size or last < first:
        return "unsatisfiable"
    return first, last


async def export(request: Request) -> Response:
    state = app_state(request)
    principal = await state.auth.check_basic(request.headers.get("authorization"), org=False)
    assert principal.project_id is not None
    start_hour, end_hour = parse_range(
        request.query_params.get("start"), request.query_params.get("end")
    )
    # Read-your-writes: everything acknowledged before now is sealed into the range's parts.
    await state.store.seal_project(principal.project_id, start_hour, end_hour)
    plan = await plan_export(
        state.store.meta,
        principal.project_id,
        start_hour,
        end_hour,
        max_bytes=state.settings.export_max_bytes,
    )
    # Fail before the response starts, never halfway through it: every blob is there, whole.
    for name, part in zip(plan.names, plan.parts, strict=True):
        found = (await state.store.blobs.head(name)).size
        if found != part.size:
            raise StorageError(f"blob {name!r} has {found} bytes, the catalog says {part.size}")
    q = request.query_params
    headers: dict[str, Any] = {
        "ETag": plan.etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": (
            f'attachment; filename="{principal.project_id}_{q["start"]}_{q["end"]}.zip"'
        ),
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
