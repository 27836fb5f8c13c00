"""DSAR endpoints (``/api/2/dsar/requests...``): thin adapters over swell.dsar.

Every endpoint authenticates with the org's key pair (Basic ``org_api_key:org_secret_key``) first,
then charges the org's rolling-hour budget (POST 8, GET 1; failed authentication costs nothing),
then does its work. Errors render as ``{"error": ..., **extra}`` (swell.api.render).

The app's lifespan calls :func:`start` and :func:`stop`. Tests may set ``app.state.clock`` (a
``Callable[[], datetime]``) before the lifespan runs to control time.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from swell.api.access import note_subject
from swell.api.bodies import parse_multipart, read_body
from swell.api.state import Front, app_state
from swell.dsar import MAX_AMPLITUDE_ID, Clock, Dsar, parse_params
from swell.errors import BadRequest, BlobNotFound, NotFound
from swell.jobs import Worker
from swell.model import DsarRequest, Principal
from swell.owner import worker_name
from swell.ratelimit import CostLimiter

logger = logging.getLogger("swell.api.dsar")

#: Amplitude's published costs against the shared DSAR budget.
POST_COST = 8
GET_COST = 1
#: Largest create-request body accepted (413 above).
MAX_BODY_BYTES = 16 * 1024
#: Fields a form-encoded or multipart create request may carry (400 above).
MAX_FORM_FIELDS = 16
#: Request and output ids are positive 63-bit integers.
_MAX_ID_DIGITS = 18
_PREFIX = "api/2/dsar/requests"


@dataclass
class DsarService:
    dsar: Dsar
    limiter: CostLimiter
    worker: Worker


def _utcnow() -> datetime:
    return datetime.now(UTC)


def start(
    app: Starlette, store: Front, *, run_worker: bool = True, sole_worker: bool = True
) -> DsarService:
    """Build the DSAR service on an open store and start its job worker (unless this node only
    serves HTTP); ``sole_worker`` when no other process works the same job queue."""
    clock: Clock = getattr(app.state, "clock", None) or _utcnow
    dsar = Dsar.from_settings(
        store.meta, store.blobs, store.settings, clock=clock, seal=store.seal_user
    )
    limiter = CostLimiter(store.meta, store.settings.dsar_cost_per_hour, clock=clock)
    worker = Worker(store.meta, [dsar], clock=clock, name=worker_name(), sole_worker=sole_worker)
    service = DsarService(dsar, limiter, worker)
    app.state.dsar = service
    if run_worker:
        worker.start()
    return service


async def stop(app: Starlette) -> None:
    """Stop the worker after its current job; never raises (the store must still close)."""
    service: DsarService | None = getattr(app.state, "dsar", None)
    if service is None:
        return
    try:
        await service.worker.aclose()
    except Exception:
        logger.exception("stopping the DSAR worker failed")


def _service(request: Request) -> DsarService:
    service: DsarService = request.app.state.dsar
    return service


async def _authorize(request: Request, cost: int) -> Principal:
    """Check the org credentials, then charge the org (the metadata store charges atomically)."""
    principal = await app_state(request).auth.check_basic(
        request.headers.get("authorization"), org=True
    )
    await _service(request).limiter.charge(principal.org_id, cost)
    note_subject(request, org_id=principal.org_id)
    metrics = app_state(request).metrics
    if metrics is not None:
        metrics.budget_spent.labels(str(principal.org_id)).inc(cost)
    return principal


def _path_id(request: Request, name: str) -> int:
    raw = str(request.path_params[name])
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_ID_DIGITS:
        raise NotFound(f"DSAR request {raw[:40]} not found")
    return int(raw)


async def _body(request: Request) -> dict[str, Any]:
    """The create request's fields, from a JSON object or a form (urlencoded or multipart).

    The size bound applies to the bytes as they arrive, whether or not a length was declared.
    """
    raw = await read_body(
        request, MAX_BODY_BYTES, f"Request body is larger than {MAX_BODY_BYTES} bytes"
    )
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await parse_multipart(request.headers, raw, max_fields=MAX_FORM_FIELDS)
    is_json = content_type == "application/json" or content_type.endswith("+json")
    if is_json or (not content_type and raw.lstrip()[:1] == b"{"):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("Invalid JSON body") from None
        if not isinstance(value, dict):
            raise BadRequest("Request body must be a JSON object")
        return value
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadRequest("Request body is not UTF-8") from None
    try:
        return dict(parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS))
    except ValueError:  # more than max_num_fields fields
        raise BadRequest("Too many form fields") from None


#: A forwarded host is used only if it is a plain host name or IP literal, with an optional port.
_FORWARDED_HOST = re.compile(
    r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (recognised, not bound)


def public_base(request: Request) -> str:
    """The base URL of the output urls: never the request's own Host header, which any client
    (or a cache or proxy passing it through) can set to send users' credentials elsewhere.

    In order: X-Forwarded-Host (and -Proto) when ``trust_forwarded_host`` is on and the value
    is a well-formed host; ``public_url``; the listen address (the address the connection was
    accepted on, when swell listens on every interface).
    """
    settings = app_state(request).settings
    if settings.trust_forwarded_host:
        host = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        if host and _FORWARDED_HOST.fullmatch(host):
            proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            scheme = proto if proto in ("http", "https") else request.url.scheme
            return f"{scheme}://{host.lower()}"
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host, port = settings.host, settings.port
    if host in _WILDCARDS:
        server = request.scope.get("server")
        if server:
            host, port = str(server[0]), int(server[1] or port)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _status(request: Request, found: DsarRequest) -> dict[str, Any]:
    available = _service(request).dsar.downloadable(found)
    base = f"{public_base(request)}/{_PREFIX}/{found.id}/outputs"
    expires = None
    if found.status == "done" and found.expires_at is not None:
        expires = found.expires_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "requestId": found.id,
        "userId": found.user_id,
        "amplitudeId": found.amplitude_id,
        "startDate": found.start_date,
        "endDate": found.end_date,
        "status": found.status,
        "failReason": found.fail_reason if found.status == "failed" else None,
        "urls": [f"{base}/{n}" for n in range(available)],
        "expires": expires,
    }


async def create_request(request: Request) -> Response:
    principal = await _authorize(request, POST_COST)
    params = parse_params(await _body(request))
    # A job could not finish while storage fails: say so now rather than accept it (503).
    await app_state(request).store.ensure_available()
    service = _service(request)
    created = await service.dsar.create(principal.org_id, params)
    service.worker.wake()
    return JSONResponse({"requestId": created.id}, status_code=202)


async def get_request(request: Request) -> Response:
    principal = await _authorize(request, GET_COST)
    request_id = _path_id(request, "request_id")
    found = await _service(request).dsar.get(principal.org_id, request_id)
    return JSONResponse(_status(request, found))


async def get_output(request: Request) -> Response:
    principal = await _authorize(request, GET_COST)
    request_id = _path_id(request, "request_id")
    raw_n = str(request.path_params["output_id"])
    if not raw_n.isascii() or not raw_n.isdigit() or len(raw_n) > _MAX_ID_DIGITS:
        raise NotFound(f"Output {raw_n[:40]} of DSAR request {request_id} not found")
    n = int(raw_n)
    key = await _service(request).dsar.output(principal.org_id, request_id, n)
    blobs = app_state(request).store.blobs
    # Open before responding: nothing can fail with a 404 once the response has started.
    try:
        size = (await blobs.head(key)).size
        chunks = blobs.stream(key)
        first = await anext(chunks, b"")
    except BlobNotFound:
        raise NotFound(f"Output {n} of DSAR request {request_id} not found") from None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(
        body(),
        media_type="application/gzip",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{request_id}-{n}.json.gz"',
        },
    )


routes = [
    Route(f"/{_PREFIX}", create_request, methods=["POST"]),
    Route(f"/{_PREFIX}/{{request_id}}", get_request, methods=["GET"]),
    Route(f"/{_PREFIX}/{{request_id}}/outputs/{{output_id}}", get_output, methods=["GET"]),
]


# -- OpenAPI ---------------------------------------------------------------------------------------

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong."},
        "field": {"type": "string", "description": "The request field at fault (400 only)."},
    },
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR}},
    }
    if headers:
        response["headers"] = headers
    return response


_UNAUTHORIZED = _error(
    "Missing or wrong org credentials (a project key is not an org key).",
    {"WWW-Authenticate": {"schema": {"type": "string"}}},
)
_RATE_LIMITED = _error(
    "The org's DSAR budget (dsar_cost_per_hour per rolling hour; POST 8, GET 1) is spent.",
    {
        "Retry-After": {
            "description": "Seconds until enough budget is free again.",
            "schema": {"type": "integer"},
        }
    },
)
_SECURITY: list[dict[str, list[str]]] = [{"basicAuth": []}]  # org keys (openapi.py)
_REQUEST_ID = {
    "name": "requestId",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
    "description": "The id returned by the create call.",
}
_BLANK = "[ \t\r\n]*"
_PRESENT = {"not": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": f"^{_BLANK}$"}]}}
#: What parse_params accepts, no stricter (a value that matches can still be refused, e.g. an
#: amplitudeId above int64 or 2024-02-30): blanks around values are ignored, an empty or null
#: field counts as absent.
_CREATE_FIELDS: dict[str, dict[str, Any]] = {
    "userId": {
        "type": ["string", "integer", "null"],
        "maxLength": 1024,
        "description": "Required unless amplitudeId is set. Covers every amplitude_id "
        "linked to this user id in each project of the org.",
    },
    "amplitudeId": {
        "type": ["integer", "string", "null"],
        "minimum": 1,
        "maximum": MAX_AMPLITUDE_ID,
        "pattern": f"^{_BLANK}([0-9]{{1,19}}{_BLANK})?$",
        "description": "Required unless userId is set. A positive int64, or its digits as a "
        "string (at most 19). An empty value counts as absent.",
    },
    "startDate": {
        "type": "string",
        "pattern": f"^{_BLANK}[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}{_BLANK}$",
        "description": "First day (UTC) of event_time included, YYYY-MM-DD.",
    },
    "endDate": {
        "type": "string",
        "pattern": f"^{_BLANK}[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}{_BLANK}$",
        "description": "Last day (UTC) of event_time included, YYYY-MM-DD; not before startDate.",
    },
}
_CREATE_BODY = {
    "type": "object",
    "required": ["startDate", "endDate"],
    "anyOf": [
        {"required": ["userId"], "properties": {"userId": _PRESENT}},
        {"required": ["amplitudeId"], "properties": {"amplitudeId": _PRESENT}},
    ],
    "properties": _CREATE_FIELDS,
}
#: Forms carry at most 16 fields (MAX_FORM_FIELDS), and every value is text.
_FORM_BODY = {
    **_CREATE_BODY,
    "maxProperties": MAX_FORM_FIELDS,
    "properties": {name: {**schema, "type": "string"} for name, schema in _CREATE_FIELDS.items()},
}
_STATUS = {
    "type": "object",
    "required": [
        "requestId",
        "userId",
        "amplitudeId",
        "startDate",
        "endDate",
        "status",
        "failReason",
        "urls",
        "expires",
    ],
    "properties": {
        "requestId": {"type": "integer"},
        "userId": {"type": ["string", "null"]},
        "amplitudeId": {"type": ["integer", "null"]},
        "startDate": {"type": "string", "format": "date"},
        "endDate": {"type": "string", "format": "date"},
        "status": {
            "type": "string",
            "enum": ["staging", "submitted", "done", "failed"],
            "description": "staging: not started; submitted: in progress; done: urls "
            "populated; failed: see failReason.",
        },
        "failReason": {"type": ["string", "null"]},
        "urls": {
            "type": "array",
            "items": {"type": "string", "format": "uri"},
            "description": "One file per (project, month of event_time); empty once expired.",
        },
        "expires": {
            "type": ["string", "null"],
            "description": "When the urls expire, UTC, e.g. 2022-02-24T23:15:54; null until done.",
        },
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/2/dsar/requests": {
        "post": {
            "tags": ["DSAR"],
            "summary": "Create a data subject access request",
            "operationId": "createDsarRequest",
            "security": _SECURITY,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _CREATE_BODY},
                    "application/x-www-form-urlencoded": {"schema": _FORM_BODY},
                    "multipart/form-data": {"schema": _FORM_BODY},
                },
            },
            "responses": {
                "202": {
                    "description": "Accepted; poll the status with the requestId.",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["requestId"],
                                "properties": {"requestId": {"type": "integer"}},
                            }
                        }
                    },
                },
                "400": _error("A field is missing or invalid; `field` names it."),
                "401": _UNAUTHORIZED,
                "413": _error(f"The body is larger than {MAX_BODY_BYTES} bytes."),
                "429": _RATE_LIMITED,
            },
        }
    },
    "/api/2/dsar/requests/{requestId}": {
        "get": {
            "tags": ["DSAR"],
            "summary": "Get the status of a DSAR request",
            "operationId": "getDsarRequest",
            "security": _SECURITY,
            "parameters": [_REQUEST_ID],
            "responses": {
                "200": {
                    "description": "The request's status.",
                    "content": {"application/json": {"schema": _STATUS}},
                },
                "401": _UNAUTHORIZED,
                "404": _error("No such request in this org."),
                "429": _RATE_LIMITED,
            },
        }
    },
    "/api/2/dsar/requests/{requestId}/outputs/{outputId}": {
        "get": {
            "tags": ["DSAR"],
            "summary": "Download one output file of a done DSAR request",
            "operationId": "getDsarOutput",
            "security": _SECURITY,
            "parameters": [
                _REQUEST_ID,
                {
                    "name": "outputId",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                    "description": "The number at the end of a url from the status.",
                },
            ],
            "responses": {
                "200": {
                    "description": "Gzipped NDJSON: one full export record (55 keys) per line.",
                    "content": {
                        "application/gzip": {"schema": {"type": "string", "format": "binary"}}
                    },
                },
                "401": _UNAUTHORIZED,
                "404": _error("No such request or output, not done yet, or expired."),
                "429": _RATE_LIMITED,
            },
        }
    },
}
