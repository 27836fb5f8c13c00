"""GET /openapi.json: the surfaces swell serves, consistent with Amplitude's published specs."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swell import __version__

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


def document(extra_paths: dict[str, Any]) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "swell",
            "version": __version__,
            "description": "Amplitude-compatible ingestion, Export and DSAR APIs.",
        },
        "paths": {**INGEST_PATHS, **EXPORT_PATHS, **extra_paths},
        "components": {
            "securitySchemes": {
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Export: project api_key:secret_key. DSAR: org keys.",
                }
            }
        },
    }


def routes(extra_paths: dict[str, Any]) -> list[Route]:
    doc = document(extra_paths)

    async def openapi(request: Request) -> Response:
        return JSONResponse(doc)

    return [Route("/openapi.json", openapi, methods=["GET"])]
