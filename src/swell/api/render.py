"""One error renderer per API surface: the wire decides the body, not the exception.

* Ingestion (``/2/httpapi``, ``/batch``, ``/identify``, ...):
  ``{"code": N, "error": ..., **extra}``; SDKs read ``code`` from the body.
* Export (``/api/2/export``): plain text; the 404 body is matched verbatim by ETL clients.
* DSAR (``/api/2/dsar/...``) and everything else under ``/api``: ``{"error": ..., **extra}``.

A dependency that fails (StorageError) answers 503 with a JSON body on every surface, Export
included, naming the ``cause`` (``blob_store``, ``metadata_store``, ``log``, ``seal_backlog``), with
a Retry-After header: see docs/compatibility.md#unavailable.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from swell.errors import RateLimited, ServiceUnavailable, StorageError, SwellError, Unauthorized

logger = logging.getLogger("swell.api")


def _headers(exc: SwellError) -> dict[str, str]:
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = 'Basic realm="swell"'
    if isinstance(exc, RateLimited | StorageError | ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    return headers


def amplitude_json(exc: SwellError) -> Response:
    body = {"code": exc.status, "error": exc.message, **exc.extra}
    return JSONResponse(body, status_code=exc.status, headers=_headers(exc))


def plain_text(exc: SwellError) -> Response:
    return PlainTextResponse(exc.message, status_code=exc.status, headers=_headers(exc))


def api_json(exc: SwellError) -> Response:
    return JSONResponse(
        {"error": exc.message, **exc.extra}, status_code=exc.status, headers=_headers(exc)
    )


def unavailable(exc: StorageError, *, ingestion: bool) -> Response:
    body: dict[str, object] = {"error": exc.message, "cause": exc.cause}
    if ingestion:
        body = {"code": exc.status, **body}
    return JSONResponse(body, status_code=exc.status, headers=_headers(exc))


def render(request: Request, exc: SwellError) -> Response:
    path = request.url.path
    if isinstance(exc, StorageError):
        return unavailable(exc, ingestion=not path.startswith("/api/"))
    if path.startswith("/api/2/export"):
        return plain_text(exc)
    if path.startswith("/api/"):
        return api_json(exc)
    return amplitude_json(exc)


async def swell_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SwellError)
    if isinstance(exc, StorageError):
        logger.warning(
            "%s %s: 503 (%s): %s", request.method, request.url.path, exc.cause, exc.message
        )
    elif exc.status >= 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return render(request, exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = SwellError("Invalid request path" if exc.status_code == 404 else str(exc.detail))
    error.status = exc.status_code  # type: ignore[misc]
    response = render(request, error)
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("%s %s: unexpected error", request.method, request.url.path)
    return render(request, SwellError())
