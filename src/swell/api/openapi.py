"""GET /openapi.json: the surfaces swell serves, consistent with Amplitude's published specs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swell import __version__
from swell.rollups import GROUP_BYS

_TIME_PARAM = {
    "in": "query",
    "required": True,
    # What the server parses: ASCII blanks around the value are ignored. A value that matches
    # can still be refused (20240230 is no date): the document never refuses what is served.
    "schema": {
        "type": "string",
        "maxLength": 12,
        "pattern": "^[ \t\r\n]*[0-9]{8}(T[0-9]{1,2})?[ \t\r\n]*$",
    },
}

_EXPORT_GET: dict[str, Any] = {
    "operationId": "exportEvents",
    "summary": "Export raw event data",
    "description": (
        "A zip of the project's hourly parts for the range: members named "
        "`{project}/{project}_{YYYY-MM-DD}_{H}#{n}.json.gz`, each a gzip of NDJSON export "
        "records. Filtered on the hour of `server_upload_time` (UTC), both ends inclusive. "
        "At most 365 days; read-your-writes. Sized (Content-Length), deterministic "
        "(strong ETag) and resumable (Range, If-Range)."
    ),
    "tags": ["Export"],
    "security": [{"basicAuth": []}],
    "parameters": [
        {
            "name": "start",
            "description": "First hour, YYYYMMDDTHH (or YYYYMMDD: its first hour)",
            **_TIME_PARAM,
        },
        {
            "name": "end",
            "description": "Last hour, YYYYMMDDTHH (or YYYYMMDD: its last hour)",
            **_TIME_PARAM,
        },
        {"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}},
        {
            "name": "If-Range",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
    ],
    "responses": {
        "200": {
            "description": "The zipped archive",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        },
        "206": {"description": "The requested byte range of the archive"},
        "400": {
            "description": "Bad parameters, or the archive is over the size limit",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "401": {"description": "Invalid or missing credentials"},
        "404": {
            "description": "No data in the range: `Raw data files were not found.`",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "416": {"description": "The Range is outside the archive"},
    },
}
EXPORT_PATHS: dict[str, Any] = {
    "/api/2/export": {
        "get": _EXPORT_GET,
        "head": {
            **_EXPORT_GET,
            "operationId": "exportEventsHead",
            "summary": "The export's headers (size, ETag) without the archive",
            "responses": {
                code: {"description": r["description"]}
                for code, r in _EXPORT_GET["responses"].items()
            },
        },
    }
}

_INGEST_RESPONSE = {
    "description": "Accepted: `{code, events_ingested, payload_size_bytes, server_upload_time}`",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["code", "events_ingested", "payload_size_bytes", "server_upload_time"],
                "properties": {
                    "code": {"type": "integer", "enum": [200]},
                    "events_ingested": {"type": "integer"},
                    "payload_size_bytes": {"type": "integer"},
                    "server_upload_time": {"type": "integer"},
                },
            }
        }
    },
}
_INGEST_ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "required": ["code", "error"],
            "properties": {"code": {"type": "integer"}, "error": {"type": "string"}},
        }
    }
}
_INGEST_ERRORS: dict[str, Any] = {
    "400": {
        "description": "Invalid request: `{code: 400, error, ...}` with per-event indexes",
        "content": _INGEST_ERROR_BODY,
    },
    "413": {
        "description": "Payload too large: `{code: 413, error}`",
        "content": _INGEST_ERROR_BODY,
    },
}
_IDENTIFY_RESPONSES: dict[str, Any] = {}
_ID = {"type": ["string", "null"], "maxLength": 1024}
#: What the server checks of an event (docs/compatibility.md has the rest, which a JSON schema
#: cannot state, e.g. placeholder ids and options.min_id_length).
_EVENT = {
    "type": "object",
    "required": ["event_type"],
    "anyOf": [
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
        {"required": ["device_id"], "properties": {"device_id": {"type": "string"}}},
    ],
    "properties": {
        "event_type": {"type": "string", "minLength": 1},
        "user_id": _ID,
        "device_id": _ID,
        "time": {"type": ["integer", "number", "null"], "minimum": 0},
        "insert_id": {"type": ["string", "null"]},
        "event_properties": {"type": ["object", "null"]},
        "user_properties": {"type": ["object", "null"]},
    },
}
_EVENTS_BODY = {
    "type": "object",
    "required": ["api_key", "events"],
    "properties": {
        "api_key": {"type": "string", "minLength": 1},
        "events": {"type": "array", "minItems": 1, "maxItems": 2000, "items": _EVENT},
        "options": {
            "type": ["object", "null"],
            "properties": {"min_id_length": {"type": ["integer", "null"], "minimum": 1}},
        },
    },
}
_IDENTIFY_FIELDS = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "minLength": 1},
        "identification": {
            "type": "string",
            "description": "A JSON object, or a JSON array of 1 to 2000 objects",
        },
    },
    "required": ["api_key", "identification"],
}

_IDENTIFY_RESPONSES.update(
    {
        "200": {
            "description": "`success`",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "400": _INGEST_ERRORS["400"],
        "413": _INGEST_ERRORS["413"],
    }
)

INGEST_PATHS: dict[str, Any] = {
    path: {
        "post": {
            "operationId": op,
            "summary": summary,
            "tags": ["Ingestion"],
            "requestBody": {
                "required": True,
                # The content type is not checked (sendBeacon posts JSON as text/plain).
                "content": {"application/json": {"schema": _EVENTS_BODY}},
            },
            "responses": {"200": _INGEST_RESPONSE, **_INGEST_ERRORS},
        }
    }
    for path, op, summary in [
        ("/2/httpapi", "httpApi", "Upload events (HTTP V2 API)"),
        ("/batch", "batchUpload", "Upload events (Batch Event Upload API)"),
    ]
} | {
    path: {
        "post": {
            "operationId": op,
            "summary": summary,
            "tags": ["Ingestion"],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {"schema": _IDENTIFY_FIELDS},
                    "multipart/form-data": {"schema": {**_IDENTIFY_FIELDS, "maxProperties": 16}},
                },
            },
            "responses": _IDENTIFY_RESPONSES,
        },
        "get": {
            "operationId": f"{op}Get",
            "summary": f"{summary}, with the fields in the query string",
            "tags": ["Ingestion"],
            "parameters": [
                {"name": name, "in": "query", "required": True, "schema": schema}
                for name, schema in _IDENTIFY_FIELDS["properties"].items()  # type: ignore[attr-defined]
            ],
            "responses": _IDENTIFY_RESPONSES,
        },
    }
    for path, op, summary in [
        ("/identify", "identify", "Set user properties (Identify API)"),
        ("/groupidentify", "groupIdentify", "Set group properties (Group Identify API)"),
    ]
}


# -- dashboard REST ---------------------------------------------------------------------------

_DAY_PARAM = {
    "in": "query",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{8}$"},
}
_DAY_PARAMS = [
    {"name": "start", "description": "First day, YYYYMMDD (UTC event-time days)", **_DAY_PARAM},
    {"name": "end", "description": "Last day, YYYYMMDD (included)", **_DAY_PARAM},
]
_SERIES = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {
            "type": "object",
            "required": ["series", "seriesLabels", "seriesMeta", "xValues"],
            "properties": {
                "series": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}},
                },
                "seriesLabels": {"type": "array"},
                "seriesMeta": {"type": "array", "items": {"type": "object"}},
                "xValues": {"type": "array", "items": {"type": "string", "format": "date"}},
            },
        }
    },
}
_API_ERROR = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    }
}
_DASHBOARD_ERRORS = {
    "400": {"description": "Bad parameters: `{error}`", **_API_ERROR},
    "401": {"description": "Invalid or missing credentials", **_API_ERROR},
}
_ANNOTATION = {
    "type": "object",
    "required": ["id", "date", "label", "details"],
    "properties": {
        "id": {"type": "integer"},
        "date": {"type": "string", "format": "date"},
        "label": {"type": "string"},
        "details": {"type": "string"},
    },
}
_ANNOTATION_FIELDS = {
    "type": "object",
    "required": ["date", "label"],
    "properties": {
        "app_id": {"type": "integer", "description": "The project's id (optional)"},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "label": {"type": "string", "minLength": 1, "maxLength": 1000},
        "details": {"type": "string", "maxLength": 10000},
        "chart_id": {"type": "string", "maxLength": 100},
    },
}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _get(op: str, summary: str, parameters: list[Any], ok: dict[str, Any]) -> dict[str, Any]:
    return {
        "operationId": op,
        "summary": summary,
        "tags": ["Dashboard"],
        "security": [{"basicAuth": []}],
        "parameters": parameters,
        "responses": {"200": ok, **_DASHBOARD_ERRORS},
    }


DASHBOARD_PATHS: dict[str, Any] = {
    "/api/2/users": {
        "get": _get(
            "activeUsers",
            "Active or new users per day, week (from Sunday) or month",
            [
                *_DAY_PARAMS,
                {
                    "name": "m",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["active", "new"]},
                },
                {
                    "name": "i",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["1", "7", "30"]},
                },
                {
                    "name": "g",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": list(GROUP_BYS)},
                },
            ],
            _json("One series per group value (or one), one number per interval", _SERIES),
        )
    },
    "/api/2/sessions/average": {
        "get": _get(
            "averageSessionLength",
            "Average session length (seconds) per day of session start",
            _DAY_PARAMS,
            _json("One series, one number per day", _SERIES),
        )
    },
    "/api/2/events/list": {
        "get": _get(
            "eventsList",
            "The project's event types, with their events in the last 7 days",
            [],
            _json(
                "`{data: [{id, value, name, display, totals, hidden, deleted, ...}]}`",
                {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}},
            ),
        )
    },
    "/api/2/annotations": {
        "get": _get(
            "listAnnotations",
            "The project's chart annotations",
            [],
            _json(
                "`{data: [annotation]}`",
                {
                    "type": "object",
                    "required": ["data"],
                    "properties": {"data": {"type": "array", "items": _ANNOTATION}},
                },
            ),
        ),
        "post": {
            **_get(
                "createAnnotation",
                "Annotate a date (fields in the query string or a form body)",
                [
                    {"name": name, "in": "query", "required": False, "schema": schema}
                    for name, schema in _ANNOTATION_FIELDS["properties"].items()  # type: ignore[attr-defined]
                ],
                _json(
                    "`{annotation, success: true}`",
                    {
                        "type": "object",
                        "required": ["annotation", "success"],
                        "properties": {"annotation": _ANNOTATION, "success": {"type": "boolean"}},
                    },
                ),
            ),
            "requestBody": {
                "required": False,
                "content": {"application/x-www-form-urlencoded": {"schema": _ANNOTATION_FIELDS}},
            },
        },
    },
    "/api/3/cohorts": {
        "get": _get(
            "listCohorts",
            "Behavioral cohorts (swell has none: always an empty list)",
            [],
            _json(
                "`{cohorts: []}`",
                {
                    "type": "object",
                    "required": ["cohorts"],
                    "properties": {"cohorts": {"type": "array", "maxItems": 0}},
                },
            ),
        )
    },
}


def document(extra_paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "swell",
            "version": __version__,
            "description": "Amplitude-compatible ingestion, Export, Dashboard REST and DSAR APIs.",
        },
        "paths": {**INGEST_PATHS, **EXPORT_PATHS, **DASHBOARD_PATHS, **extra_paths},
        "components": {
            "securitySchemes": {
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": (
                        "Export and Dashboard: project api_key:secret_key. DSAR: org keys."
                    ),
                }
            }
        },
    }


def routes(extra_paths: dict[str, Any]) -> list[Route]:
    doc = document(extra_paths)

    async def openapi(request: Request) -> Response:
        return JSONResponse(doc)

    return [Route("/openapi.json", openapi, methods=["GET"])]
