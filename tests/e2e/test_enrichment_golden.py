"""Golden rows: events with fixed fields sent to ``swell serve``; every one of the 55 stored keys
compared with a hand-computed value (exact where deterministic, shape where assigned by the
server: uuid, amplitude_id, receive/upload/processing times)."""

from __future__ import annotations

import re
import uuid as uuidlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from swell.model import EXPORT_KEYS, parse_ts
from tests.conftest import LiveServer, live_export

TS = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)

#: Every column null or empty: what a row holds for a key nothing filled.
EMPTY: dict[str, Any] = dict.fromkeys(EXPORT_KEYS) | {
    "event_properties": {},
    "user_properties": {},
    "group_properties": {},
    "groups": {},
    "plan": {},
    "data_type": "event",
    "session_id": -1,
}

#: Assigned by the server: checked for shape and relations, not value.
ASSIGNED = {
    "amplitude_id",
    "uuid",
    "client_upload_time",
    "server_received_time",
    "server_upload_time",
    "processed_time",
}

WEB_EVENT: dict[str, Any] = {
    "user_id": "golden-user-1",
    "device_id": "golden-device-1",
    "event_type": "Purchase Completed",
    "time": 1_751_387_694_837,
    "insert_id": "golden-1",
    "event_id": 42,
    "session_id": 1_751_387_600_000,
    "app_version": "3.1.4",
    "platform": "Web",
    "user_agent": MAC_CHROME,
    "language": "fr-FR",
    "country": "France",
    "region": "Île-de-France",
    "city": "Paris",
    "location_lat": 48.8566,
    "location_lng": 2.3522,
    "ip": "$remote",
    "price": 19.99,
    "quantity": 2,
    "revenue": 39.98,
    "productId": "sku-1",
    "revenueType": "purchase",
    "currency": "EUR",
    "event_properties": {"coupon": "SUMMER", "items": [{"sku": "sku-1"}]},
    "user_properties": {"$set": {"plan": "pro"}, "$setOnce": {"first_seen": "2025-07-01"}},
    "groups": {"company": "acme"},
    "plan": {"branch": "main", "source": "web", "version": "12"},
    "partner_id": "partner-9",
    "library": "amplitude-ts/2.11.0",
    "start_version": "1.0.0",
    "android_id": "not-a-column",
}

WEB_EXPECTED: dict[str, Any] = EMPTY | {
    "$insert_id": "golden-1",
    "app": None,  # the project id, filled in by the test
    "city": "Paris",
    "client_event_time": "2025-07-01 16:34:54.837000",
    "country": "France",
    "data": {
        "path": "/2/httpapi",
        "user_properties_updated": True,
        "group_first_event": {},
        "group_ids": {},
    },
    "device_family": "Mac OS",
    "device_id": "golden-device-1",
    "device_model": "Mac OS",
    "event_id": 42,
    "event_properties": {
        "coupon": "SUMMER",
        "items": [{"sku": "sku-1"}],
        "$price": 19.99,
        "$quantity": 2,
        "$revenue": 39.98,
        "$productId": "sku-1",
        "$revenueType": "purchase",
        "$currency": "EUR",
    },
    "event_time": "2025-07-01 16:34:54.837000",
    "event_type": "Purchase Completed",
    "group_properties": {"company": {"acme": {}}},
    "groups": {"company": ["acme"]},
    "ip_address": "127.0.0.1",
    "language": "French",
    "library": "amplitude-ts/2.11.0",
    "location_lat": 48.8566,
    "location_lng": 2.3522,
    "os_name": "Chrome",
    "os_version": "126",
    "partner_id": "partner-9",
    "plan": {"branch": "main", "source": "web", "version": "12"},
    "platform": "Web",
    "region": "Île-de-France",
    "session_id": 1_751_387_600_000,
    "start_version": "1.0.0",
    "user_id": "golden-user-1",
    "user_properties": {"first_seen": "2025-07-01", "plan": "pro"},
    "version_name": "3.1.4",
}

MOBILE_EVENT: dict[str, Any] = {
    "device_id": "golden-device-2",
    "event_type": "App Opened",
    "time": 1_751_387_000_000,
    "insert_id": "golden-2",
    "app_version": "17.0.1",
    "platform": "iOS",
    "os_name": "ios",
    "os_version": "17.5",
    "device_brand": "Apple",
    "device_manufacturer": "Apple",
    "device_model": "iPhone15,2",
    "carrier": "T-Mobile",
    "user_agent": IPHONE_SAFARI,
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "idfv": "not-a-column",
    "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "ip": "203.0.113.9",
    "dma": "San Francisco-Oakland-San Jose, CA",
    "language": "Klingon",
    "user_properties": {"theme": "dark"},
}

MOBILE_EXPECTED: dict[str, Any] = EMPTY | {
    "$insert_id": "golden-2",
    "adid": "38400000-8cf0-11bd-b23e-10b96e40000d",
    "client_event_time": "2025-07-01 16:23:20.000000",
    "data": {
        "path": "/batch",
        "user_properties_updated": True,
        "group_first_event": {},
        "group_ids": {},
    },
    "device_brand": "Apple",
    "device_carrier": "T-Mobile",
    "device_family": "Apple iPhone",  # sent fields win; the user agent fills only the gaps
    "device_id": "golden-device-2",
    "device_manufacturer": "Apple",
    "device_model": "iPhone15,2",
    "device_type": "Apple iPhone",
    "dma": "San Francisco-Oakland-San Jose, CA",
    "event_time": "2025-07-01 16:23:20.000000",
    "event_type": "App Opened",
    "idfa": "6D92078A-8246-4BA4-AE5B-76104861E7DC",
    "ip_address": "203.0.113.9",
    "language": "Klingon",  # not a language tag: kept as sent
    "library": "batch/1.0",
    "os_name": "ios",
    "os_version": "17.5",
    "platform": "iOS",
    "user_properties": {"theme": "dark"},
    "version_name": "17.0.1",
}

SERVER_EVENT: dict[str, Any] = {"user_id": "golden-user-3", "event_type": "Ping"}

SERVER_EXPECTED: dict[str, Any] = EMPTY | {
    "data": {"path": "/2/httpapi", "group_first_event": {}, "group_ids": {}},
    "event_type": "Ping",
    "library": "http/2.0",
    "user_id": "golden-user-3",
    # client_event_time, event_time (= upload time) and event_id are checked below
}


def export_rows(server: LiveServer, project: dict[str, Any]) -> list[dict[str, Any]]:
    lines = live_export(server, project)
    for line in lines:  # compact JSON, top-level keys in Amplitude's (sorted) order
        assert line == orjson.dumps(orjson.loads(line))
    return [orjson.loads(line) for line in lines]


def check_assigned(row: dict[str, Any], sent_before: datetime, acked_after: datetime) -> None:
    assert UUID4.match(row["uuid"]), row["uuid"]
    assert uuidlib.UUID(row["uuid"]).version == 4
    assert type(row["amplitude_id"]) is int
    assert row["amplitude_id"] > 0
    for key in ("client_upload_time", "server_received_time", "server_upload_time"):
        assert TS.match(row[key]), (key, row[key])
    assert TS.match(row["processed_time"])
    received = parse_ts(row["server_received_time"])
    assert sent_before <= received <= acked_after
    assert received <= parse_ts(row["server_upload_time"]) <= parse_ts(row["processed_time"])
    assert parse_ts(row["processed_time"]) <= acked_after
    # No client upload time was sent: it is the receive time.
    assert row["client_upload_time"] == row["server_received_time"]


def test_stored_rows_match_hand_computed_expectations(
    live_server: LiveServer, live_keys: tuple[Path, dict[str, Any], dict[str, Any]]
) -> None:
    project = live_keys[2]
    key = project["api_key"]
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        for path, events in (
            ("/2/httpapi", [WEB_EVENT, SERVER_EVENT]),
            ("/batch", [MOBILE_EVENT]),
        ):
            resp = client.post(path, json={"api_key": key, "events": events})
            assert resp.json()["code"] == 200, resp.text
    after = datetime.now(UTC) + timedelta(milliseconds=1)

    rows = export_rows(live_server, project)
    assert len(rows) == 3
    by_type = {row["event_type"]: row for row in rows}
    expectations = {
        "Purchase Completed": WEB_EXPECTED | {"app": project["project_id"]},
        "App Opened": MOBILE_EXPECTED | {"app": project["project_id"]},
        "Ping": SERVER_EXPECTED | {"app": project["project_id"]},
    }
    for event_type, expected in expectations.items():
        row = by_type[event_type]
        assert list(row) == list(EXPORT_KEYS)
        check_assigned(row, before, after)
        exact = [k for k in EXPORT_KEYS if k not in ASSIGNED]
        if expected["event_id"] is None:  # not sent: the server numbers the event
            assert type(row["event_id"]) is int
            assert 0 <= row["event_id"] < 2**31
            exact.remove("event_id")
        if event_type == "Ping":  # without `time` the event happened when it was uploaded
            assert row["client_event_time"] == row["client_upload_time"]
            assert row["event_time"] == row["client_event_time"]
            exact = [k for k in exact if k not in ("client_event_time", "event_time")]
        mismatches = {k: (row[k], expected[k]) for k in exact if row[k] != expected[k]}
        assert not mismatches, f"{event_type}: {mismatches}"
        assert list(row["data"]) == list(expected["data"])  # the wire's key order
    assert len({row["uuid"] for row in rows}) == 3
    assert len({row["amplitude_id"] for row in rows}) == 3
