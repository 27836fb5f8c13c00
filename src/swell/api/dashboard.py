"""The Dashboard REST endpoints ETL connectors sync beside the export: thin adapters over
swell.dashboard, with the project's Basic credentials as for Export.

``/api/2/users``, ``/api/2/sessions/average``, ``/api/2/events/list``, ``/api/2/annotations``
(GET and POST) and ``/api/3/cohorts``; errors are the ``/api`` JSON shape (swell.api.render).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from swell import dashboard
from swell.api.bodies import read_body
from swell.api.state import AppState, app_state
from swell.errors import BadRequest

#: The largest POST /api/2/annotations body (a form of a few short fields).
MAX_ANNOTATION_BODY = 64 * 1024
#: Sealing every open part of the project covers any event time (parts are filed by upload hour).
_ALL_HOURS = (0, 2**31 - 1)


async def _project(request: Request) -> tuple[AppState, int]:
    state = app_state(request)
    principal = await state.auth.check_basic(request.headers.get("authorization"), org=False)
    assert principal.project_id is not None
    return state, principal.project_id


async def _fresh(state: AppState, project_id: int) -> None:
    """Read-your-writes: what was acknowledged before now is sealed, so it is in the rollups."""
    await state.store.seal_project(project_id, *_ALL_HOURS)


def _params(request: Request) -> dict[str, str]:
    return dict(request.query_params)


async def users(request: Request) -> Response:
    state, project_id = await _project(request)
    query = dashboard.parse_users(_params(request))
    await _fresh(state, project_id)
    data = await dashboard.users(state.store.meta, project_id, query)
    return JSONResponse({"data": data})


async def average_sessions(request: Request) -> Response:
    state, project_id = await _project(request)
    first, last = dashboard.parse_days(_params(request))
    await _fresh(state, project_id)
    data = await dashboard.average_sessions(state.store.meta, project_id, first, last)
    return JSONResponse({"data": data})


async def events_list(request: Request) -> Response:
    state, project_id = await _project(request)
    await _fresh(state, project_id)
    data = await dashboard.events_list(state.store.meta, project_id, dashboard.today_utc())
    return JSONResponse({"data": data})


def _annotation(a: Any) -> dict[str, Any]:
    return {"id": a.id, "date": a.date, "label": a.label, "details": a.details}


async def list_annotations(request: Request) -> Response:
    state, project_id = await _project(request)
    found = await state.store.meta.annotations(project_id)
    return JSONResponse({"data": [_annotation(a) for a in found]})


async def create_annotation(request: Request) -> Response:
    state, project_id = await _project(request)
    raw = await read_body(request, MAX_ANNOTATION_BODY)
    params = _params(request)
    if raw:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Invalid body: not UTF-8") from None
        try:
            form = dict(parse_qsl(text, keep_blank_values=True, max_num_fields=16))
        except ValueError:
            raise BadRequest("Invalid body: too many fields") from None
        params.update(form)
    new = dashboard.parse_annotation(params, project_id)
    made = await state.store.meta.add_annotation(
        project_id, new.date, new.label, new.details, new.chart_id
    )
    return JSONResponse({"annotation": _annotation(made), "success": True})


async def cohorts(request: Request) -> Response:
    await _project(request)
    # swell has no cohort builder: no project has a cohort (docs/compatibility.md#dashboard).
    return JSONResponse({"cohorts": []})


async def annotations_route(request: Request) -> Response:
    if request.method == "POST":
        return await create_annotation(request)
    return await list_annotations(request)


routes = [
    Route("/api/2/users", users, methods=["GET"]),
    Route("/api/2/sessions/average", average_sessions, methods=["GET"]),
    Route("/api/2/events/list", events_list, methods=["GET"]),
    Route("/api/2/annotations", annotations_route, methods=["GET", "POST"]),
    Route("/api/3/cohorts", cohorts, methods=["GET"]),
]
