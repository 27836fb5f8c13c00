"""The Export API read as a client reads it: unzip, gunzip each member, parse each line."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.model import EXPORT_KEYS, format_ts
from tests.conftest import Keys, create_keys

BASE = datetime(2024, 3, 5, tzinfo=UTC)


def record(project_id: int, upload: datetime, n: int, user: str = "u-0001") -> dict[str, Any]:
    rec: dict[str, Any] = dict.fromkeys(EXPORT_KEYS)
    rec.update(
        {
            "$insert_id": f"ins-{n}",
            "amplitude_id": 1000 + hash(user) % 1000,
            "app": project_id,
            "data": {"path": "/2/httpapi"},
            "event_properties": {"n": n},
            "event_time": format_ts(upload),
            "event_type": "Page Viewed",
            "group_properties": {},
            "groups": {},
            "plan": {},
            "server_upload_time": format_ts(upload),
            "user_id": user,
            "user_properties": {},
            "uuid": f"00000000-0000-4000-8000-{n:012d}",
        }
    )
    return rec


def load(client: TestClient, project_id: int, records: list[dict[str, Any]]) -> None:
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    assert client.portal is not None
    client.portal.call(store.import_records, project_id, [(orjson.dumps(r), r) for r in records])


def read_zip(body: bytes) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        assert zf.testzip() is None
        for name in zf.namelist():
            raw = gzip.decompress(zf.read(name))
            assert raw.endswith(b"\n")
            out[name] = [orjson.loads(line) for line in raw.splitlines()]
    return out


def export(client: TestClient, keys: Keys, start: str, end: str, **kw: Any) -> Any:
    return client.get(
        "/api/2/export", params={"start": start, "end": end}, auth=keys.export_auth, **kw
    )


@pytest.fixture
def loaded(client: TestClient, keys: Keys) -> list[dict[str, Any]]:
    # Hours 0, 5, 9 and 23 of 2024-03-05, plus hour 0 of the next day; 3 events each.
    hours = [0, 5, 9, 23, 24]
    records = [
        record(keys.project_id, BASE + timedelta(hours=h, minutes=10 * i), h * 10 + i)
        for h in hours
        for i in range(3)
    ]
    load(client, keys.project_id, records)
    return records


def test_export_returns_one_member_per_part_named_like_amplitude(client, keys, loaded):
    resp = export(client, keys, "20240305T00", "20240305T23")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/zip"
    members = read_zip(resp.content)
    p = keys.project_id
    assert sorted(members) == sorted(f"{p}/{p}_2024-03-05_{h}#0.json.gz" for h in (0, 5, 9, 23))
    got = sorted(r["$insert_id"] for rows in members.values() for r in rows)
    want = sorted(r["$insert_id"] for r in loaded if r["server_upload_time"] < "2024-03-06")
    assert got == want
    # Records come back exactly as stored: same keys, same order, same values.
    first = members[f"{p}/{p}_2024-03-05_5#0.json.gz"][0]
    assert list(first) == list(EXPORT_KEYS)
    assert first == next(r for r in loaded if r["$insert_id"] == first["$insert_id"])


def test_both_hours_are_inclusive(client, keys, loaded):
    members = read_zip(export(client, keys, "20240305T05", "20240305T09").content)
    assert len(members) == 2
    assert sum(len(rows) for rows in members.values()) == 6


def test_bare_dates_cover_whole_days(client, keys, loaded):
    members = read_zip(export(client, keys, "20240305", "20240306").content)
    assert sum(len(rows) for rows in members.values()) == 15


def test_unpadded_hour_is_accepted(client, keys, loaded):
    assert export(client, keys, "20240305T5", "20240305T5").status_code == 200


def test_no_data_is_404_with_amplitudes_text(client, keys, loaded):
    resp = export(client, keys, "20240305T01", "20240305T04")
    assert resp.status_code == 404
    assert resp.text == "Raw data files were not found."


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"end": "20240305T01"}, "Missing required parameter 'start'"),
        ({"start": "20240305T01"}, "Missing required parameter 'end'"),
        ({"start": "2024-03-05", "end": "20240305T01"}, "Invalid 'start'"),
        ({"start": "20240305T24", "end": "20240305T01"}, "the hour must be 00 to 23"),
        ({"start": "20240230T00", "end": "20240305T01"}, "no such date"),
        ({"start": "20240305T05", "end": "20240305T04"}, "'start' is after 'end'"),
        ({"start": "20230101T00", "end": "20240305T04"}, "maximum queryable period is 365 days"),
        ({"start": "1" * 5000, "end": "20240305T04"}, "Invalid 'start'"),
    ],
)
def test_bad_parameters_are_400_with_distinct_messages(client, keys, params, fragment):
    resp = client.get("/api/2/export", params=params, auth=keys.export_auth)
    assert resp.status_code == 400
    assert fragment in resp.text
    assert "Traceback" not in resp.text


def test_a_full_365_day_range_is_allowed(client, keys, loaded):
    assert export(client, keys, "20230307T00", "20240305T23").status_code == 200


@pytest.mark.parametrize(
    "auth",
    [None, ("nope", "nope"), "wrong-secret", "org-key"],
)
def test_bad_credentials_are_401_with_basic_challenge(client, keys, auth):
    if auth == "wrong-secret":
        auth = (keys.api_key, keys.org_secret)
    elif auth == "org-key":
        auth = keys.org_auth
    resp = client.get(
        "/api/2/export", params={"start": "20240305T00", "end": "20240305T01"}, auth=auth
    )
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Basic")


def test_malformed_authorization_header_is_401(client, keys):
    resp = client.get(
        "/api/2/export",
        params={"start": "20240305T00", "end": "20240305T01"},
        headers={"Authorization": "Basic !!!not-base64"},
    )
    assert resp.status_code == 401


def test_a_projects_keys_see_only_that_project(client, keys, loaded):
    other = create_keys(client, "globex")
    assert export(client, other, "20240305T00", "20240305T23").status_code == 404


def test_read_your_writes_after_ingest(client, keys):
    now = datetime.now(UTC)
    events = [
        {"user_id": "reader@example.com", "event_type": "Wrote", "insert_id": f"w-{i}"}
        for i in range(25)
    ]
    resp = client.post("/2/httpapi", json={"api_key": keys.api_key, "events": events})
    assert resp.json()["code"] == 200
    start = (now - timedelta(hours=1)).strftime("%Y%m%dT%H")
    end = (now + timedelta(hours=1)).strftime("%Y%m%dT%H")
    rows = [r for rs in read_zip(export(client, keys, start, end).content).values() for r in rs]
    assert sorted(r["$insert_id"] for r in rows) == sorted(f"w-{i}" for i in range(25))


def test_etag_is_stable_and_range_resumes(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    again = export(client, keys, "20240305T00", "20240306T23")
    etag = full.headers["etag"]
    assert etag.startswith('"')
    assert etag == again.headers["etag"]
    assert full.content == again.content
    assert int(full.headers["content-length"]) == len(full.content)
    assert full.headers["accept-ranges"] == "bytes"
    size = len(full.content)
    for first, last in [(0, 0), (10, 99), (size // 2, size - 1), (size - 1, size - 1)]:
        part = export(
            client,
            keys,
            "20240305T00",
            "20240306T23",
            headers={"Range": f"bytes={first}-{last}", "If-Range": etag},
        )
        assert part.status_code == 206
        assert part.headers["content-range"] == f"bytes {first}-{last}/{size}"
        assert part.content == full.content[first : last + 1]
    tail = export(client, keys, "20240305T00", "20240306T23", headers={"Range": "bytes=-7"})
    assert tail.content == full.content[-7:]
    open_ended = export(client, keys, "20240305T00", "20240306T23", headers={"Range": "bytes=5-"})
    assert open_ended.content == full.content[5:]


def test_if_range_with_a_stale_etag_sends_everything(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    resp = export(
        client,
        keys,
        "20240305T00",
        "20240306T23",
        headers={"Range": "bytes=10-20", "If-Range": '"stale"'},
    )
    assert resp.status_code == 200
    assert resp.content == full.content


def test_unsatisfiable_range_is_416(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    size = len(full.content)
    resp = export(client, keys, "20240305T00", "20240306T23", headers={"Range": f"bytes={size}-"})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{size}"


def test_head_gives_headers_without_body(client, keys, loaded):
    full = export(client, keys, "20240305T00", "20240306T23")
    head = client.head(
        "/api/2/export",
        params={"start": "20240305T00", "end": "20240306T23"},
        auth=keys.export_auth,
    )
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["etag"] == full.headers["etag"]


def test_new_data_in_a_range_changes_the_etag(client, keys, loaded):
    before = export(client, keys, "20240305T00", "20240306T23").headers["etag"]
    load(client, keys.project_id, [record(keys.project_id, BASE + timedelta(hours=5), 999)])
    after = export(client, keys, "20240305T00", "20240306T23")
    assert after.headers["etag"] != before
    members = read_zip(after.content)
    p = keys.project_id
    assert f"{p}/{p}_2024-03-05_5#1.json.gz" in members


def test_exports_over_the_size_limit_are_400(tmp_path: Path):
    from swell.settings import Settings

    settings = Settings(data_dir=tmp_path / "d", seal_check_seconds=3600, export_max_bytes=500)
    with TestClient(create_app(settings)) as client:
        keys = create_keys(client)
        load(client, keys.project_id, [record(keys.project_id, BASE, i) for i in range(20)])
        resp = export(client, keys, "20240305T00", "20240305T23")
        assert resp.status_code == 400
        assert "too large" in resp.text
        assert "500 bytes" in resp.text


def test_concurrent_exports_during_ingest_are_all_correct(client, keys, loaded):
    expected = export(client, keys, "20240305T00", "20240306T23").content
    results: list[bytes] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(export(client, keys, "20240305T00", "20240306T23").content)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for i in range(5):
        client.post(
            "/2/httpapi",
            json={
                "api_key": keys.api_key,
                "events": [{"user_id": "busy@example.com", "event_type": f"e{i}"}],
            },
        )
    for t in threads:
        t.join(60)
    assert not errors
    assert results == [expected] * 6


@pytest.mark.parametrize("tool", ["unzip", "bsdtar"])
def test_archive_is_readable_by_standard_tools(client, keys, loaded, tmp_path, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed")
    path = tmp_path / "export.zip"
    path.write_bytes(export(client, keys, "20240305T00", "20240306T23").content)
    cmd = ["unzip", "-t", str(path)] if tool == "unzip" else ["bsdtar", "-tvf", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"{keys.project_id}_2024-03-05_23#0.json.gz" in out.stdout
