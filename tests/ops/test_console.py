"""The web console through HTTP, as a browser without JavaScript uses it: sign-in, pages, CSRF on
every form, org isolation, secrets shown once, the export download, /docs and /."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from swell.api.console import SESSION_COOKIE
from tests.conftest import Keys, create_keys, hours_around_now, zip_lines

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:500]
    return found.group(1)


def sign_in(client: TestClient, keys: Keys) -> str:
    """Sign in with the org's pair; returns the session's CSRF token (from the projects page)."""
    page = client.get("/console/login")
    assert page.status_code == 200
    resp = client.post(
        "/console/login",
        data={"csrf": csrf_of(page.text), "api_key": keys.org_key, "secret_key": keys.org_secret},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    assert resp.headers["location"] == "/console"
    cookie = resp.headers["set-cookie"]
    for flag in ("HttpOnly", "SameSite=strict", "Path=/console", "Max-Age="):
        assert flag.lower() in cookie.lower(), cookie
    home = client.get("/console")
    assert home.status_code == 200
    return csrf_of(home.text)


def send(client: TestClient, api_key: str, n: int) -> None:
    events = [{"user_id": "user-1", "event_type": "Played", "insert_id": f"c{i}"} for i in range(n)]
    assert client.post("/2/httpapi", json={"api_key": api_key, "events": events}).status_code == 200


def test_root_redirects_to_the_console_and_the_console_to_sign_in(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/console"
    resp = client.get("/console", follow_redirects=False)
    assert resp.status_code == 303
    assert resp.headers["location"] == "/console/login"


def test_sign_in_shows_the_orgs_projects_with_their_totals(client: TestClient, keys: Keys) -> None:
    send(client, keys.api_key, 7)
    exported = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    assert exported.status_code == 200  # seals the events, which the pages count
    sign_in(client, keys)
    page = client.get("/console").text
    assert f'data-project="{keys.project_id}">7<' in page
    assert '<strong id="chart-total">7</strong>' in page
    assert "<svg" in page
    assert "<script" not in page  # the chart is drawn on the server
    assert keys.secret_key not in page
    assert keys.org_secret not in page


def test_wrong_credentials_and_project_keys_do_not_sign_in(client: TestClient, keys: Keys) -> None:
    for key, secret in ((keys.org_key, "wrong"), (keys.api_key, keys.secret_key)):
        page = client.get("/console/login")
        resp = client.post(
            "/console/login",
            data={"csrf": csrf_of(page.text), "api_key": key, "secret_key": secret},
            follow_redirects=False,
        )
        assert resp.status_code == 401
        assert f"{SESSION_COOKIE}=" not in resp.headers.get("set-cookie", "")


def test_every_form_needs_the_csrf_token(client: TestClient, keys: Keys) -> None:
    page = client.get("/console/login")
    bad = client.post(
        "/console/login",
        data={"csrf": "forged", "api_key": keys.org_key, "secret_key": keys.org_secret},
    )
    assert bad.status_code == 403
    assert csrf_of(page.text)
    token = sign_in(client, keys)
    for path, data in (
        ("/console/projects", {"name": "x"}),
        (f"/console/projects/{keys.project_id}/rotate-keys", {}),
        ("/console/logout", {}),
    ):
        assert client.post(path, data=data).status_code == 403
        assert client.post(path, data={**data, "csrf": token + "x"}).status_code == 403
    # None of them happened: the project list is as it was, the old key still ingests.
    send(client, keys.api_key, 1)
    assert client.get("/console").status_code == 200


def test_create_a_project_and_rotate_its_keys_showing_secrets_once(
    client: TestClient, keys: Keys
) -> None:
    token = sign_in(client, keys)
    created = client.post("/console/projects", data={"csrf": token, "name": "ios"})
    assert created.status_code == 200
    secret = re.search(r'id="secret-key">([0-9a-f]+)<', created.text)
    api_key = re.search(r'id="api-key">([0-9a-f]+)<', created.text)
    assert secret is not None
    assert api_key is not None
    send(client, api_key.group(1), 2)
    home = client.get("/console").text
    assert "ios" in home
    assert secret.group(1) not in home
    rotated = client.post(f"/console/projects/{keys.project_id}/rotate-keys", data={"csrf": token})
    assert rotated.status_code == 200
    new_key = re.search(r'id="api-key">([0-9a-f]+)<', rotated.text)
    new_secret = re.search(r'id="secret-key">([0-9a-f]+)<', rotated.text)
    assert new_key is not None
    assert new_secret is not None
    old = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    assert old.status_code == 401
    fresh = (new_key.group(1), new_secret.group(1))
    assert client.get("/api/2/export", params=hours_around_now(), auth=fresh).status_code in (
        200,
        404,
    )


def test_the_export_download_is_the_export_api(client: TestClient, keys: Keys) -> None:
    send(client, keys.api_key, 5)
    sign_in(client, keys)
    page = client.get(f"/console/projects/{keys.project_id}")
    assert page.status_code == 200
    resp = client.get(f"/console/projects/{keys.project_id}/export", params=hours_around_now())
    assert resp.status_code == 200
    assert resp.headers["content-disposition"].startswith("attachment;")
    direct = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    assert resp.content == direct.content
    assert len(zip_lines(resp.content)) == 5
    page = client.get(f"/console/projects/{keys.project_id}").text
    assert '<td class="num">5</td>' in page  # the day's events, once sealed


def test_another_orgs_session_sees_nothing_of_this_org(client: TestClient, keys: Keys) -> None:
    send(client, keys.api_key, 3)
    other = create_keys(client, "globex")
    token = sign_in(client, other)
    home = client.get("/console").text
    assert "acme-web" not in home
    assert f'data-project="{keys.project_id}"' not in home
    for path in (
        f"/console/projects/{keys.project_id}",
        f"/console/projects/{keys.project_id}/export?start=20240101T00&end=20240101T01",
    ):
        assert client.get(path).status_code == 404
    rotate = client.post(f"/console/projects/{keys.project_id}/rotate-keys", data={"csrf": token})
    assert rotate.status_code == 404
    send(client, keys.api_key, 1)  # this org's keys still work


def test_rotating_the_orgs_keys_ends_its_sessions(client: TestClient, keys: Keys) -> None:
    sign_in(client, keys)
    meta = client.app.state.swell.store.meta  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(meta.rotate_key, keys.org_id, None, "f" * 32, "h")
    resp = client.get("/console", follow_redirects=False)
    assert resp.status_code == 303


@pytest.mark.parametrize("cookie", ["garbage", "a" * 2000, "e30.Zz.Zz"])
def test_a_forged_session_is_no_session(client: TestClient, cookie: str) -> None:
    client.cookies.set(SESSION_COOKIE, cookie, path="/console")
    assert client.get("/console", follow_redirects=False).status_code == 303
    assert client.post("/console/projects", data={"name": "x"}).status_code == 401


def test_docs_serve_swagger_ui_locally(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert srcs
    for src in srcs:
        assert src.startswith("/"), src  # nothing from another host
        if src.startswith("/docs/static/"):
            assert client.get(src).status_code == 200
    assert client.get("/docs/static/../settings.py").status_code == 404
    assert client.get("/openapi.json").status_code == 200
