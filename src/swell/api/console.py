"""The web console at ``/console``: an org's projects, their events and parts, exports, keys.

Sign-in takes an org's key pair, checked as the DSAR API checks it. The session is a cookie
signed with itsdangerous (``SWELL_CONSOLE_SECRET``, or a random secret per process, which signs
everyone out on restart): HttpOnly, SameSite=Strict, Path=/console, Secure over https, expiring
after ``SWELL_CONSOLE_SESSION_SECONDS``. It holds the org's api_key (never the secret) and a CSRF
token; every request checks the key still belongs to the org, so rotating the org's keys ends its
sessions. Every form carries the CSRF token (sign-in too, through a pre-session cookie), and
every page shows only the signed-in org's projects: another org's project is 404. Secrets are
shown once, on the page that answers their creation, and never again.

Pages work without JavaScript: the chart is an SVG drawn on the server (leather).
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import leather
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from swell.api.access import note_subject
from swell.api.export import export_response
from swell.api.state import app_state
from swell.auth import hash_secret, new_credentials
from swell.errors import BadRequest, Forbidden, NotFound, Unauthorized
from swell.model import ProjectInfo, hour_of

SESSION_COOKIE = "swell_console"
LOGIN_CSRF_COOKIE = "swell_console_login"
#: Days of events per hour on the projects page.
CHART_DAYS = 7
MAX_FORM_BYTES = 4096
MAX_NAME = 200

_templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)
_process_secret = secrets.token_urlsafe(32)


def _serializer(request: Request) -> URLSafeTimedSerializer:
    secret = app_state(request).settings.console_secret or _process_secret
    return URLSafeTimedSerializer(secret, salt="swell-console")


def _render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(name).render(**context)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
        },
    )


class Session:
    def __init__(self, org_id: int, csrf: str) -> None:
        self.org_id = org_id
        self.csrf = csrf


async def _session(request: Request) -> Session | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 1024:
        return None
    max_age = app_state(request).settings.console_session_seconds
    try:
        data = _serializer(request).loads(raw, max_age=max_age)
    except BadSignature:
        return None
    if not isinstance(data, dict):
        return None
    key, csrf, org_id = data.get("k"), data.get("c"), data.get("o")
    if not isinstance(key, str) or not isinstance(csrf, str) or not isinstance(org_id, int):
        return None
    found = await app_state(request).auth.principal(key, fresh=True)
    if found is None or found.project_id is not None or found.org_id != org_id:
        return None  # the org's keys were rotated: the session ends
    note_subject(request, org_id=org_id)
    return Session(org_id, csrf)


async def _form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadRequest("Form too large")
    from urllib.parse import parse_qsl

    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=16))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("Invalid form") from None


def _check_csrf(form: dict[str, str], expected: str) -> None:
    if not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise Forbidden("Invalid or missing CSRF token; reload the page and try again")


async def _require(request: Request) -> Session:
    session = await _session(request)
    if session is None:
        raise Unauthorized("Sign in at /console/login")
    return session


def _to_login() -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


async def _org_project(request: Request, session: Session) -> ProjectInfo:
    raw = str(request.path_params["project_id"])
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise NotFound("No such project")
    projects = await app_state(request).store.meta.list_projects(session.org_id)
    for project in projects:
        if project.id == int(raw):
            return project
    raise NotFound("No such project")  # another org's project is as absent as a missing one


def _cookie_flags(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": "/console",
    }


# -- sign-in ---------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = _render("login.html", csrf=token, error=None)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(request))
    return response


async def login(request: Request) -> Response:
    form = await _form(request)
    _check_csrf(form, request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(8))
    api_key, secret = form.get("api_key", "").strip(), form.get("secret_key", "").strip()
    found = await app_state(request).auth.principal(api_key, fresh=True) if api_key else None
    expected = found.secret_hash if found is not None else hash_secret("\x00")
    ok = hmac.compare_digest(hash_secret(secret), expected)
    response: Response
    if found is None or not ok or found.project_id is not None:
        token = secrets.token_urlsafe(24)
        response = _render("login.html", 401, csrf=token, error="Invalid org key or secret")
        response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(request))
        return response
    session = {"k": api_key, "o": found.org_id, "c": secrets.token_urlsafe(24)}
    response = RedirectResponse("/console", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        _serializer(request).dumps(session),
        max_age=app_state(request).settings.console_session_seconds,
        **_cookie_flags(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return response


async def logout(request: Request) -> Response:
    session = await _require(request)
    _check_csrf(await _form(request), session.csrf)
    response = _to_login()
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


# -- pages -------------------------------------------------------------------------------------


def _hour_label(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%d %H:00")


def _chart(title: str, labels: list[str], series: dict[str, list[int]]) -> Markup:
    """An SVG column chart of the summed series, drawn on the server (leather; no script)."""
    totals = [sum(values) for values in zip(*series.values(), strict=True)] if series else []
    chart = leather.Chart(title)
    chart.add_columns([(label, total) for label, total in zip(labels, totals, strict=True)])
    return Markup(chart.to_svg(width=960, height=320))  # noqa: S704 (leather escapes its text)


async def home(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login()
    state = app_state(request)
    projects = await state.store.meta.list_projects(session.org_id)
    last = hour_of(datetime.now(UTC))
    first = last - CHART_DAYS * 24 + 1
    hours = list(range(first, last + 1))
    series: dict[str, list[int]] = {}
    totals: dict[int, int] = {}
    for project in projects:
        per_hour = dict.fromkeys(hours, 0)
        for part in await state.store.meta.parts(project.id, first, last):
            per_hour[part.hour] += part.events
        series[f"{project.id} {project.name}"] = list(per_hour.values())
        totals[project.id] = sum(per_hour.values())
    chart = _chart(
        f"Events per hour, last {CHART_DAYS} days (sealed)",
        [_hour_label(h) for h in hours],
        series,
    )
    return _render(
        "projects.html",
        csrf=session.csrf,
        projects=projects,
        totals=totals,
        chart=chart if projects else None,
        total=sum(totals.values()),
    )


async def project_page(request: Request) -> Response:
    session = await _session(request)
    if session is None:
        return _to_login()
    project = await _org_project(request, session)
    meta = app_state(request).store.meta
    last = hour_of(datetime.now(UTC))
    first = last - CHART_DAYS * 24 + 1
    parts = await meta.parts(project.id, first, last)
    by_day: dict[str, int] = {}
    for part in parts:
        day = _hour_label(part.hour)[:10]
        by_day[day] = by_day.get(day, 0) + part.events
    now = datetime.now(UTC).strftime("%Y%m%dT%H")
    return _render(
        "project.html",
        csrf=session.csrf,
        project=project,
        parts=[(_hour_label(p.hour), p) for p in reversed(parts)],
        by_day=sorted(by_day.items()),
        default_start=datetime.fromtimestamp(first * 3600, UTC).strftime("%Y%m%dT%H"),
        default_end=now,
    )


async def export_download(request: Request) -> Response:
    session = await _require(request)
    project = await _org_project(request, session)
    return await export_response(request, project.id)


async def create_project(request: Request) -> Response:
    session = await _require(request)
    form = await _form(request)
    _check_csrf(form, session.csrf)
    name = form.get("name", "").strip()
    if not name or len(name) > MAX_NAME:
        raise BadRequest(f"A project name is 1 to {MAX_NAME} characters")
    creds = new_credentials()
    project_id = await app_state(request).store.meta.create_project(
        name, session.org_id, creds.api_key, creds.secret_hash
    )
    return _render(
        "secret.html",
        what=f"Project {project_id} ({name}) created",
        project_id=project_id,
        api_key=creds.api_key,
        secret_key=creds.secret_key,
    )


async def rotate_keys(request: Request) -> Response:
    session = await _require(request)
    project = await _org_project(request, session)
    form = await _form(request)
    _check_csrf(form, session.csrf)
    creds = new_credentials()
    await app_state(request).store.meta.rotate_key(
        session.org_id, project.id, creds.api_key, creds.secret_hash
    )
    return _render(
        "secret.html",
        what=f"New keys of project {project.id} ({project.name}); the old pair is refused now",
        project_id=project.id,
        api_key=creds.api_key,
        secret_key=creds.secret_key,
    )


async def root(request: Request) -> Response:
    return RedirectResponse("/console", status_code=307)


routes = [
    Route("/", root, methods=["GET"]),
    Route("/console", home, methods=["GET"]),
    Route("/console/login", login_page, methods=["GET"]),
    Route("/console/login", login, methods=["POST"]),
    Route("/console/logout", logout, methods=["POST"]),
    Route("/console/projects", create_project, methods=["POST"]),
    Route("/console/projects/{project_id}", project_page, methods=["GET"]),
    Route("/console/projects/{project_id}/export", export_download, methods=["GET"]),
    Route("/console/projects/{project_id}/rotate-keys", rotate_keys, methods=["POST"]),
]
