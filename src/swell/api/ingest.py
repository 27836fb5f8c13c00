"""Amplitude ingestion endpoints: thin adapters over swell.ingest and the store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from swell.api.access import note_subject
from swell.api.bodies import parse_multipart, read_body
from swell.api.state import app_state
from swell.enrich import RequestContext
from swell.errors import (
    BadRequest,
    ClientDisconnected,
    ClientError,
    PayloadTooLarge,
    RateLimited,
    SwellError,
)
from swell.ingest import (
    BATCH_MAX_BYTES,
    HTTPAPI_MAX_BYTES,
    decode_body,
    parse_events_body,
    parse_identify_form,
)

FORM_MAX_BYTES = 1_000_000


def client_ip(request: Request) -> str | None:
    if app_state(request).settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip() or None
    return request.client.host if request.client else None


def reject_reason(exc: SwellError) -> str:
    """The ``reason`` label of a refused ingestion request (swell.metrics.REJECT_REASONS)."""
    if isinstance(exc, PayloadTooLarge):
        return "too_large"
    if isinstance(exc, ClientDisconnected):
        return "client_disconnected"
    if isinstance(exc, RateLimited):
        return "throttled"
    if isinstance(exc, ClientError):
        return "invalid_body"
    return "unavailable"


async def _events(request: Request, path: str, library: str, max_bytes: int) -> Response:
    metrics = app_state(request).metrics
    if metrics is None:
        return await _ingest_events(request, path, library, max_bytes, None)
    seen: list[Any] = [None, 0]  # the project id and event count, once known
    try:
        response = await _ingest_events(request, path, library, max_bytes, seen)
    except InvalidApiKey:
        metrics.rejected(None, "invalid_api_key", seen[1])
        raise
    except SwellError as exc:
        metrics.rejected(seen[0], reject_reason(exc), seen[1])
        raise
    metrics.events_ingested.labels(str(seen[0])).inc(seen[1])
    return response


class InvalidApiKey(BadRequest):
    """An ingestion request whose api_key no project has (400, as Amplitude answers)."""


async def _ingest_events(
    request: Request, path: str, library: str, max_bytes: int, seen: list[Any] | None
) -> Response:
    received = datetime.now(UTC)
    state = app_state(request)
    raw = await read_body(request, max_bytes)
    body = decode_body(raw, request.headers.get("content-encoding"), max_bytes)
    batch = parse_events_body(body, max_bytes=max_bytes)
    if seen is not None:
        seen[1] = len(batch.events)
    project_id = await state.auth.project_for_ingest(batch.api_key)
    if project_id is None:
        raise InvalidApiKey(f"Invalid API key: {batch.api_key[:64]}")
    note_subject(request, project_id=project_id)
    if seen is not None:
        seen[0] = project_id
    upload = datetime.now(UTC)
    ctx = RequestContext(
        project_id=project_id,
        path=path,
        default_library=library,
        server_received=received,
        server_upload=upload,
        client_upload=batch.client_upload_time,
        remote_ip=client_ip(request),
    )
    await state.store.ingest(batch.events, ctx)
    return JSONResponse(
        {
            "code": 200,
            "events_ingested": len(batch.events),
            "payload_size_bytes": len(raw),
            "server_upload_time": int(upload.timestamp() * 1000),
        }
    )


async def httpapi(request: Request) -> Response:
    return await _events(request, "/2/httpapi", "http/2.0", HTTPAPI_MAX_BYTES)


async def batch(request: Request) -> Response:
    return await _events(request, "/batch", "batch/1.0", BATCH_MAX_BYTES)


async def _form(request: Request) -> dict[str, str]:
    if request.method == "GET":
        return dict(request.query_params)
    raw = await read_body(request, FORM_MAX_BYTES)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await parse_multipart(request.headers, raw, max_fields=16)
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadRequest("Request body is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


async def _identify(request: Request, *, group: bool) -> Response:
    state = app_state(request)
    api_key, identifications = parse_identify_form(await _form(request), group=group)
    project_id = await state.auth.project_for_ingest(api_key)
    if project_id is None:
        raise BadRequest(f"Invalid API key: {api_key[:64]}")
    note_subject(request, project_id=project_id)
    await state.store.identify(project_id, identifications, group=group)
    return PlainTextResponse("success")


async def identify(request: Request) -> Response:
    return await _identify(request, group=False)


async def group_identify(request: Request) -> Response:
    return await _identify(request, group=True)


routes = [
    Route("/2/httpapi", httpapi, methods=["POST"]),
    Route("/batch", batch, methods=["POST"]),
    Route("/identify", identify, methods=["POST", "GET"]),
    Route("/groupidentify", group_identify, methods=["POST", "GET"]),
]
