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
    "schema": {"type": "string", "pattern": "^[0-9]{8}(T[0-9]{1,2})?$"},
}

EXPORT_PATHS: dict[str, Any] = {
    "/api/2/export": {
        "get": {
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
                    "content": {
                        "application/zip": {"schema": {"type": "string", "format": "binary"}}
                    },
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
    }
}

_INGEST_RESPONSE = {
    "description": "Accepted: `{code, events_ingested, payload_size_bytes, server_upload_time}`",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_INGEST_ERRORS = {
    "400": {"description": "Invalid request: `{code: 400, error, ...}` with per-event indexes"},
    "413": {"description": "Payload too large: `{code: 413, error}`"},
}

INGEST_PATHS: dict[str, Any] = {
    path: {
        "post": {
            "operationId": op,
            "summary": summary,
            "tags": ["Ingestion"],
            "requestBody": {
                "content": {"application/json": {"schema": {"type": "object"}}},
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
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "api_key": {"type": "string"},
                                "identification": {"type": "string"},
                            },
                            "required": ["api_key", "identification"],
                        }
                    }
                }
            },
            "responses": {"200": {"description": "`success`"}, "400": _INGEST_ERRORS["400"]},
        }
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
