"""Hostile and careless input: every answer is a clean 4xx in the surface's shape, never a 500."""

from __future__ import annotations

import base64
import gzip
import socket
import time
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from swell.export import parse_hour
from swell.ingest import HTTPAPI_MAX_BYTES, decode_body
from swell.userprops import apply_user_properties
from tests.api.test_export_api import BASE, export, load, read_zip, record
from tests.conftest import Keys, LiveServer, hours_around_now, zip_lines

#: Other scripts' digits that ``\d`` and int() accept: fullwidth and Arabic-Indic.
FOREIGN_DIGITS = [
    "".join(chr(0xFF10 + int(c)) for c in "20240305"),
    "".join(chr(0x0660 + int(c)) for c in "20240305"),
]


@pytest.fixture
def loaded(client: TestClient, keys: Keys) -> None:
    load(
        client,
        keys.project_id,
        [record(keys.project_id, BASE + timedelta(hours=5), n) for n in range(3)],
    )


# -- Export: Range -------------------------------------------------------------------------------


def test_a_range_position_past_pythons_int_digit_limit_is_416(client, keys, loaded):
    resp = export(
        client, keys, "20240305", "20240305", headers={"Range": "bytes=" + "9" * 5000 + "-"}
    )
    # The header is longer than any sane Range: ignored (RFC 9110 allows it), the archive is whole.
    assert resp.status_code == 200
    assert len(read_zip(resp.content)) == 1
    resp = export(
        client, keys, "20240305", "20240305", headers={"Range": "bytes=" + "9" * 200 + "-"}
    )
    assert resp.status_code == 416
    size = int(resp.headers["content-range"].split("/")[1])
    whole = export(client, keys, "20240305", "20240305")
    assert size == len(whole.content)


def test_huge_suffix_and_last_positions_clamp_to_the_archive(client, keys, loaded):
    whole = export(client, keys, "20240305", "20240305").content
    suffix = export(client, keys, "20240305", "20240305", headers={"Range": "bytes=-" + "9" * 100})
    assert suffix.status_code == 206
    assert suffix.content == whole
    tail = export(client, keys, "20240305", "20240305", headers={"Range": "bytes=10-" + "9" * 100})
    assert tail.status_code == 206
    assert tail.content == whole[10:]


def test_range_positions_in_other_scripts_digits_are_ignored(client, keys, loaded):
    whole = export(client, keys, "20240305", "20240305").content
    resp = export(client, keys, "20240305", "20240305", headers={"Range": "bytes=١-٢".encode()})
    assert resp.status_code == 200
    assert resp.content == whole


# -- Basic auth that is not base64 or not UTF-8 ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [b"Basic \xff\xfe", b"Basic \xc3\xa9t\xc3\xa9", b"Basic //79", b"Basic " + b"\xe9" * 40],
    ids=["latin1-bytes", "utf8-text", "base64-of-non-utf8", "long-latin1"],
)
def test_basic_auth_that_is_not_base64_utf8_is_401_on_export(client, keys, value):
    resp = client.get(
        "/api/2/export",
        params={"start": "20240305", "end": "20240305"},
        headers={"Authorization": value},
    )
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Basic")
    assert resp.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("value", [b"Basic \xff\xfe", b"Basic //79"])
def test_basic_auth_that_is_not_base64_utf8_is_401_on_dsar(client, keys, value):
    for method, path in [("POST", "/api/2/dsar/requests"), ("GET", "/api/2/dsar/requests/1")]:
        resp = client.request(method, path, headers={"Authorization": value}, content=b"{}")
        assert resp.status_code == 401
        assert "error" in resp.json()


# -- ASCII digits only ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", FOREIGN_DIGITS, ids=["fullwidth", "arabic-indic"])
def test_export_dates_in_other_scripts_digits_are_400(client, keys, loaded, value):
    resp = client.get(
        "/api/2/export", params={"start": value, "end": "20240305"}, auth=keys.export_auth
    )
    assert resp.status_code == 400
    assert "Invalid 'start' value" in resp.text


def test_export_filename_is_built_from_the_parsed_hours(client, keys, loaded):
    resp = export(client, keys, " 20240305T5", "20240305")
    assert resp.status_code == 200
    expected = f'attachment; filename="{keys.project_id}_20240305T05_20240305T23.zip"'
    assert resp.headers["content-disposition"] == expected


@pytest.mark.parametrize("value", FOREIGN_DIGITS)
def test_parse_hour_refuses_other_scripts_digits(value):
    with pytest.raises(Exception, match="Invalid 'start' value"):
        parse_hour("start", value, end=False)
    with pytest.raises(Exception, match="Invalid 'start' value"):
        parse_hour("start", "20240305T" + chr(0x0665), end=False)


def test_dsar_dates_and_ids_in_other_scripts_digits_are_400(client, keys):
    date = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in "2024-03-05")
    for body, field in [
        ({"userId": "alice", "startDate": date, "endDate": "2024-03-05"}, "startDate"),
        ({"amplitudeId": "١٢٣", "startDate": "2024-03-05", "endDate": "2024-03-05"}, "amplitudeId"),
    ]:
        resp = client.post("/api/2/dsar/requests", json=body, auth=keys.org_auth)
        assert resp.status_code == 400
        assert resp.json()["field"] == field
    resp = client.get("/api/2/dsar/requests/١٢", auth=keys.org_auth)
    assert resp.status_code == 404


def test_add_ignores_numeric_strings_in_other_scripts_digits():
    assert apply_user_properties({"n": 1}, {"$add": {"n": "1٢"}}) == {"n": 1}
    assert apply_user_properties({"n": 1}, {"$add": {"n": "12"}}) == {"n": 13}


# -- gzip bodies ---------------------------------------------------------------------------------


def test_a_gzip_body_whose_first_member_is_empty_is_read_whole():
    body = b'{"api_key":"k","events":[]}'
    for raw in [
        gzip.compress(b"") + gzip.compress(body),
        gzip.compress(b"") + gzip.compress(b"") + gzip.compress(body[:5]) + gzip.compress(body[5:]),
    ]:
        assert decode_body(raw, "gzip", HTTPAPI_MAX_BYTES) == body
    assert decode_body(gzip.compress(b""), "gzip", HTTPAPI_MAX_BYTES) == b""


def test_ingest_accepts_a_gzip_body_that_starts_with_an_empty_member(client, keys):
    event = {"user_id": "user-empty-member", "event_type": "gz", "insert_id": "gz-1"}
    body = orjson.dumps({"api_key": keys.api_key, "events": [event]})
    resp = client.post(
        "/2/httpapi",
        content=gzip.compress(b"") + gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["events_ingested"] == 1
    exported = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    rows = [orjson.loads(line) for line in zip_lines(exported.content)]
    assert [r["$insert_id"] for r in rows] == ["gz-1"]


# -- a client that disconnects mid-body ----------------------------------------------------------


def _abort_mid_body(port: int, path: str, declared: int, sent: bytes, auth: str = "") -> None:
    """Send a request's head and part of its body, then hang up."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {declared}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + sent)


def test_a_client_that_disconnects_mid_body_is_logged_once_without_a_traceback(
    live_server: LiveServer, live_keys: tuple[Any, dict[str, Any], dict[str, Any]]
):
    _, org, project = live_keys
    basic = base64.b64encode(f"{org['api_key']}:{org['secret_key']}".encode()).decode()
    aborts = [
        (
            "/2/httpapi",
            100_000,
            b'{"api_key":"' + project["api_key"].encode() + b'","events":[',
            "",
        ),
        ("/batch", 50_000, b'{"api_key":', ""),
        ("/identify", 10_000, b"api_key=x&identification=", ""),
        ("/api/2/dsar/requests", 5_000, b'{"userId":', f"Authorization: Basic {basic}\r\n"),
    ]
    before = len(live_server.log_path.read_bytes())
    for path, declared, sent, auth in aborts:
        _abort_mid_body(live_server.port, path, declared, sent, auth)
    # The server is still healthy, and a request after the aborts is answered.
    assert httpx.get(f"{live_server.url}/healthz", timeout=10).status_code == 200
    # Disconnects are noticed asynchronously: wait (bounded) until each abort has been logged.
    deadline = time.monotonic() + 30
    log = ""
    while time.monotonic() < deadline:
        log = live_server.log_path.read_bytes()[before:].decode(errors="replace")
        if log.count("the client disconnected") >= len(aborts):
            break
        time.sleep(0.05)
    assert "Traceback" not in log
    assert "unexpected error" not in log
    # Besides the access log's one line per request, each abort is one line.
    lines = [line for line in log.splitlines() if line.strip() and " swell.access " not in line]
    assert len(lines) == len(aborts), log
    assert all(" INFO " in line and "the client disconnected" in line for line in lines), lines
