"""``/docs``: interactive API docs for ``/openapi.json``, Swagger UI served from the
swagger-ui-bundle package (no CDN)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route
from swagger_ui_bundle import swagger_ui_path

from swell.errors import NotFound

_HERE = Path(__file__).parent
#: The only files /docs/static serves: Swagger UI's bundle and style, and swell's start-up script.
_FILES = {
    "swagger-ui-bundle.js": Path(str(swagger_ui_path)) / "swagger-ui-bundle.js",
    "swagger-ui.css": Path(str(swagger_ui_path)) / "swagger-ui.css",
    "swell-docs.js": _HERE / "static" / "swell-docs.js",
}


async def docs(request: Request) -> Response:
    html = (_HERE / "templates" / "docs.html").read_text()
    return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'"})


async def static(request: Request) -> Response:
    path = _FILES.get(str(request.path_params["name"]))
    if path is None:
        raise NotFound("No such file")
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


routes = [
    Route("/docs", docs, methods=["GET"]),
    Route("/docs/static/{name}", static, methods=["GET"]),
]
