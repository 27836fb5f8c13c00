"""HTTP V2, Batch, Identify and Group Identify through the app, read back through the Export API."""

from __future__ import annotations

import gzip
import re
import time
import uuid as uuidlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.model import EXPORT_KEYS, parse_ts
from swell.settings import Settings
from tests.conftest import Keys, create_keys, hours_around_now, zip_lines

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def post(
    client: TestClient,
    keys: Keys,
    events: list[dict[str, Any]],
    path: str = "/2/httpapi",
    **top: Any,
) -> Any:
    body = orjson.dumps({"api_key": keys.api_key, "events": events, **top})
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


def exported(client: TestClient, keys: Keys) -> list[dict[str, Any]]:
    """Every stored record of the hours around now, in the order the export lists them."""
    resp = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in zip_lines(resp.content)]


def by_insert_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {row["$insert_id"]: row for row in rows}
    assert len(out) == len(rows), "duplicate $insert_id in export"
    return out


def ts(value: str) -> datetime:
    return parse_ts(value)


# -- success bodies ----------------------------------------------------------------------------


def test_httpapi_success_body_counts_events_and_bytes(client: TestClient, keys: Keys) -> None:
    events = [{"user_id": "user-0001", "event_type": f"e{i}"} for i in range(3)]
    body = orjson.dumps({"api_key": keys.api_key, "events": events})
    before = int(time.time() * 1000)
    resp = client.post("/2/httpapi", content=body, headers={"Content-Type": "application/json"})
    after = int(time.time() * 1000)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    data = resp.json()
    assert list(data) == ["code", "events_ingested", "payload_size_bytes", "server_upload_time"]
    assert data["code"] == 200
    assert data["events_ingested"] == 3
    assert data["payload_size_bytes"] == len(body)
    assert type(data["server_upload_time"]) is int
    assert before <= data["server_upload_time"] <= after


def test_batch_success_body_and_stored_rows(client: TestClient, keys: Keys) -> None:
    events = [
        {"device_id": "device-0001", "event_type": "b", "insert_id": f"b{i}"} for i in range(4)
    ]
    body = orjson.dumps({"api_key": keys.api_key, "events": events})
    resp = client.post("/batch", content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    data = resp.json()
    assert data["code"] == 200
    assert data["events_ingested"] == 4
    assert data["payload_size_bytes"] == len(body)
    rows = by_insert_id(exported(client, keys))
    assert sorted(rows) == ["b0", "b1", "b2", "b3"]
    for row in rows.values():
        assert row["library"] == "batch/1.0"
        assert row["data"]["path"] == "/batch"


def test_gzip_body_is_accepted_and_size_is_the_compressed_size(
    client: TestClient, keys: Keys
) -> None:
    raw = orjson.dumps(
        {
            "api_key": keys.api_key,
            "events": [{"user_id": "user-gzip", "event_type": "zipped", "insert_id": "gz-1"}],
        }
    )
    body = gzip.compress(raw)
    resp = client.post(
        "/2/httpapi",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["events_ingested"] == 1
    assert resp.json()["payload_size_bytes"] == len(body)
    [row] = exported(client, keys)
    assert (row["user_id"], row["event_type"], row["$insert_id"]) == ("user-gzip", "zipped", "gz-1")


def test_send_beacon_text_plain_body_is_accepted(client: TestClient, keys: Keys) -> None:
    body = orjson.dumps(
        {"api_key": keys.api_key, "events": [{"device_id": "beacon-dev", "event_type": "unload"}]}
    )
    resp = client.post(
        "/2/httpapi", content=body, headers={"Content-Type": "text/plain;charset=UTF-8"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["events_ingested"] == 1
    [row] = exported(client, keys)
    assert row["event_type"] == "unload"


def test_extra_top_level_keys_are_tolerated(client: TestClient, keys: Keys) -> None:
    resp = post(
        client,
        keys,
        [{"user_id": "user-extra", "event_type": "x"}],
        request_metadata={"sdk": {"metrics": {"histogram": {"a": 1}}}},
        something_new=[1, 2, 3],
        options={"min_id_length": 5, "future_option": True},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["events_ingested"] == 1


# -- stored fields -----------------------------------------------------------------------------


def test_stored_rows_carry_the_ingested_fields(client: TestClient, keys: Keys) -> None:
    event_ms = 1_700_000_000_123
    resp = post(
        client,
        keys,
        [
            {
                "user_id": "user-0001",
                "device_id": "device-0001",
                "event_type": "Signed Up",
                "insert_id": "ins-1",
                "app_version": "2.3.4",
                "time": event_ms,
                "event_properties": {"plan": "pro", "seats": 3},
                "ip": "$remote",
                "platform": "Web",
                "carrier": "Acme Mobile",
                "language": "en-US",
            },
            {
                "user_id": "user-0001",
                "event_type": "Page Viewed",
                "insert_id": "ins-2",
                "library": "amplitude-python/1.3.0",
                "ip": "203.0.113.7",
            },
        ],
    )
    assert resp.status_code == 200, resp.text
    rows = by_insert_id(exported(client, keys))
    first, second = rows["ins-1"], rows["ins-2"]
    for row in (first, second):
        assert list(row) == list(EXPORT_KEYS)
        assert row["app"] == keys.project_id
        assert row["data_type"] == "event"
        assert row["session_id"] == -1
        assert UUID4.match(row["uuid"]), row["uuid"]
        assert uuidlib.UUID(row["uuid"]).version == 4
    assert first["uuid"] != second["uuid"]
    assert first["event_type"] == "Signed Up"
    assert first["version_name"] == "2.3.4"
    assert first["library"] == "http/2.0"
    assert second["library"] == "amplitude-python/1.3.0"
    assert first["data"] == {"path": "/2/httpapi", "group_first_event": {}, "group_ids": {}}
    assert first["client_event_time"] == "2023-11-14 22:13:20.123000"
    assert first["event_time"] == "2023-11-14 22:13:20.123000"  # no client upload time: no skew
    assert first["event_properties"] == {"plan": "pro", "seats": 3}
    assert first["ip_address"] == "testclient"
    assert second["ip_address"] == "203.0.113.7"
    assert first["device_carrier"] == "Acme Mobile"
    assert first["platform"] == "Web"
    assert first["language"] == "English"
    assert first["device_id"] == "device-0001"
    assert second["device_id"] is None
    # Without a client upload time, client_upload_time equals server_received_time.
    assert first["client_upload_time"] == first["server_received_time"]
    assert ts(first["server_received_time"]) <= ts(first["server_upload_time"])
    assert ts(first["server_upload_time"]) <= ts(first["processed_time"])
    # An event without `time` happened when it was uploaded.
    assert second["client_event_time"] == second["client_upload_time"]


def test_event_time_is_shifted_by_client_clock_skew_over_60_seconds(
    client: TestClient, keys: Keys
) -> None:
    behind = datetime.now(UTC) - timedelta(seconds=120)
    event_ms = 1_700_000_000_000
    resp = post(
        client,
        keys,
        [{"user_id": "user-skew1", "event_type": "late", "time": event_ms, "insert_id": "s1"}],
        client_upload_time=behind.isoformat().replace("+00:00", "Z"),
    )
    assert resp.status_code == 200, resp.text
    resp = post(
        client,
        keys,
        [{"user_id": "user-skew1", "event_type": "close", "time": event_ms, "insert_id": "s2"}],
        client_upload_time=int((datetime.now(UTC) - timedelta(seconds=20)).timestamp() * 1000),
    )
    assert resp.status_code == 200, resp.text
    ahead = datetime.now(UTC) + timedelta(seconds=300)
    resp = post(
        client,
        keys,
        [{"user_id": "user-skew1", "event_type": "fast", "time": event_ms, "insert_id": "s3"}],
        upload_time=int(ahead.timestamp() * 1000),  # the legacy name
    )
    assert resp.status_code == 200, resp.text
    rows = by_insert_id(exported(client, keys))
    late, close, fast = rows["s1"], rows["s2"], rows["s3"]
    # Skew over 60 s: event_time = client_event_time + (server_received - client_upload).
    assert late["client_event_time"] == "2023-11-14 22:13:20.000000"
    assert late["client_upload_time"] == behind.strftime("%Y-%m-%d %H:%M:%S.%f")
    skew = ts(late["server_received_time"]) - ts(late["client_upload_time"])
    assert skew >= timedelta(seconds=120)
    assert ts(late["event_time"]) == ts(late["client_event_time"]) + skew
    # Skew under 60 s: not adjusted.
    assert close["client_upload_time"] != close["server_received_time"]
    assert close["event_time"] == close["client_event_time"] == "2023-11-14 22:13:20.000000"
    # A client clock running ahead moves the event back.
    skew = ts(fast["server_received_time"]) - ts(fast["client_upload_time"])
    assert skew < timedelta(seconds=-290)
    assert ts(fast["event_time"]) == ts(fast["client_event_time"]) + skew


# -- dedup -------------------------------------------------------------------------------------


def test_same_device_and_insert_id_is_stored_once(client: TestClient, keys: Keys) -> None:
    event = {"device_id": "device-dedup", "event_type": "once", "insert_id": "dup-1"}
    first = post(client, keys, [event])
    second = post(client, keys, [event, {**event, "event_type": "other", "insert_id": "dup-2"}])
    assert first.json()["events_ingested"] == 1
    assert second.json()["events_ingested"] == 2  # a duplicate still counts as ingested
    # Another device with the same insert_id is a different event.
    post(client, keys, [{**event, "device_id": "device-dedup-2"}])
    rows = exported(client, keys)
    assert sorted((r["device_id"], r["$insert_id"], r["event_type"]) for r in rows) == [
        ("device-dedup", "dup-1", "once"),
        ("device-dedup", "dup-2", "other"),
        ("device-dedup-2", "dup-1", "once"),
    ]


def test_duplicate_insert_id_within_one_request_is_stored_once(
    client: TestClient, keys: Keys
) -> None:
    event = {"device_id": "device-dedup", "event_type": "once", "insert_id": "dup-x"}
    resp = post(client, keys, [event, event])
    assert resp.json()["events_ingested"] == 2
    assert [r["$insert_id"] for r in exported(client, keys)] == ["dup-x"]


# -- identity ----------------------------------------------------------------------------------


def aids(client: TestClient, keys: Keys) -> dict[str, int]:
    return {iid: row["amplitude_id"] for iid, row in by_insert_id(exported(client, keys)).items()}


def test_anonymous_history_joins_the_user_who_logs_in_on_that_device(
    client: TestClient, keys: Keys
) -> None:
    post(client, keys, [{"device_id": "dev-A", "event_type": "anon", "insert_id": "1"}])
    post(
        client,
        keys,
        [{"device_id": "dev-A", "user_id": "alice", "event_type": "login", "insert_id": "2"}],
    )
    post(
        client,
        keys,
        [{"device_id": "dev-B", "user_id": "alice", "event_type": "new device", "insert_id": "3"}],
    )
    post(client, keys, [{"device_id": "dev-B", "event_type": "anon after", "insert_id": "4"}])
    post(client, keys, [{"user_id": "alice", "event_type": "no device", "insert_id": "5"}])
    ids = aids(client, keys)
    assert type(ids["1"]) is int
    assert ids["1"] == ids["2"] == ids["3"] == ids["4"] == ids["5"]


def test_different_user_ids_never_share_an_amplitude_id(client: TestClient, keys: Keys) -> None:
    post(client, keys, [{"device_id": "dev-shared", "event_type": "anon", "insert_id": "1"}])
    post(
        client,
        keys,
        [{"device_id": "dev-shared", "user_id": "alice", "event_type": "login", "insert_id": "2"}],
    )
    post(
        client,
        keys,
        [{"device_id": "dev-shared", "user_id": "bobby", "event_type": "login", "insert_id": "3"}],
    )
    post(
        client,
        keys,
        [{"device_id": "dev-shared", "event_type": "anon after bob", "insert_id": "4"}],
    )
    post(client, keys, [{"user_id": "carol", "event_type": "x", "insert_id": "5"}])
    post(client, keys, [{"user_id": "alice", "event_type": "again", "insert_id": "6"}])
    ids = aids(client, keys)
    assert ids["1"] == ids["2"] == ids["6"]
    assert len({ids["2"], ids["3"], ids["5"]}) == 3
    assert ids["4"] == ids["3"]  # the device's last known user


def test_known_user_logging_in_on_an_anonymous_device_keeps_their_id(
    client: TestClient, keys: Keys
) -> None:
    post(client, keys, [{"user_id": "alice", "event_type": "first", "insert_id": "1"}])
    post(client, keys, [{"device_id": "dev-new", "event_type": "anon", "insert_id": "2"}])
    post(
        client,
        keys,
        [{"device_id": "dev-new", "user_id": "alice", "event_type": "login", "insert_id": "3"}],
    )
    post(client, keys, [{"device_id": "dev-new", "event_type": "anon after", "insert_id": "4"}])
    ids = aids(client, keys)
    assert ids["3"] == ids["1"]
    assert ids["2"] != ids["1"]  # raw rows keep the pre-merge id
    assert ids["4"] == ids["1"]


def test_identity_is_per_project(client: TestClient, keys: Keys) -> None:
    other = create_keys(client, "globex")
    post(client, keys, [{"user_id": "alice", "event_type": "a", "insert_id": "1"}])
    post(client, other, [{"user_id": "alice", "event_type": "a", "insert_id": "1"}])
    [mine], [theirs] = exported(client, keys), exported(client, other)
    assert mine["app"] == keys.project_id
    assert theirs["app"] == other.project_id
    assert mine["uuid"] != theirs["uuid"]


# -- user properties ---------------------------------------------------------------------------


def test_user_properties_on_rows_are_the_state_after_each_event(
    client: TestClient, keys: Keys
) -> None:
    updates: list[dict[str, Any] | None] = [
        {"$set": {"plan": "free", "visits": 1}},
        {"$setOnce": {"plan": "pro", "source": "ads"}},
        {"$add": {"visits": 2}},
        None,
        {"$unset": {"plan": "-"}},
        {"city": "Paris"},  # plain keys act as $set
    ]
    for i, update in enumerate(updates):
        event: dict[str, Any] = {"user_id": "prop-user", "event_type": "e", "insert_id": f"p{i}"}
        if update is not None:
            event["user_properties"] = update
        assert post(client, keys, [event]).status_code == 200
    rows = by_insert_id(exported(client, keys))
    assert [rows[f"p{i}"]["user_properties"] for i in range(len(updates))] == [
        {"plan": "free", "visits": 1},
        {"plan": "free", "visits": 1, "source": "ads"},
        {"plan": "free", "visits": 3, "source": "ads"},
        {"plan": "free", "visits": 3, "source": "ads"},
        {"visits": 3, "source": "ads"},
        {"visits": 3, "source": "ads", "city": "Paris"},
    ]
    assert [rows[f"p{i}"]["data"].get("user_properties_updated") for i in range(6)] == [
        True,
        True,
        True,
        None,
        True,
        True,
    ]


def test_user_properties_within_one_request_apply_in_order(client: TestClient, keys: Keys) -> None:
    events = [
        {
            "user_id": "prop-user",
            "event_type": "e",
            "insert_id": f"q{i}",
            "user_properties": {"$add": {"n": 1}},
        }
        for i in range(3)
    ]
    post(client, keys, events)
    rows = by_insert_id(exported(client, keys))
    assert [rows[f"q{i}"]["user_properties"] for i in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_skip_user_properties_sync_leaves_the_user_state_alone(
    client: TestClient, keys: Keys
) -> None:
    post(
        client,
        keys,
        [
            {
                "user_id": "skip-user",
                "event_type": "a",
                "insert_id": "1",
                "user_properties": {"$set": {"plan": "free"}},
            }
        ],
    )
    post(
        client,
        keys,
        [
            {
                "user_id": "skip-user",
                "event_type": "b",
                "insert_id": "2",
                "user_properties": {"$set": {"plan": "pro", "x": 1}},
                "$skip_user_properties_sync": True,
            }
        ],
    )
    post(client, keys, [{"user_id": "skip-user", "event_type": "c", "insert_id": "3"}])
    rows = by_insert_id(exported(client, keys))
    assert rows["2"]["user_properties"] == {"plan": "free"}
    assert "user_properties_updated" not in rows["2"]["data"]
    assert rows["3"]["user_properties"] == {"plan": "free"}


def identify_form(client: TestClient, path: str, api_key: str, identification: Any) -> Any:
    return client.post(
        path, data={"api_key": api_key, "identification": orjson.dumps(identification).decode()}
    )


def test_identify_form_post_changes_the_users_next_event(client: TestClient, keys: Keys) -> None:
    post(
        client,
        keys,
        [
            {
                "user_id": "ident-user",
                "event_type": "before",
                "insert_id": "1",
                "user_properties": {"$set": {"visits": 1}},
            }
        ],
    )
    resp = identify_form(
        client,
        "/identify",
        keys.api_key,
        {
            "user_id": "ident-user",
            "user_properties": {"$set": {"plan": "pro"}, "$add": {"visits": 4}},
        },
    )
    assert resp.status_code == 200
    assert resp.text == "success"
    assert resp.headers["content-type"].startswith("text/plain")
    post(client, keys, [{"user_id": "ident-user", "event_type": "after", "insert_id": "2"}])
    rows = by_insert_id(exported(client, keys))
    assert sorted(rows) == ["1", "2"]  # identify calls are not events
    assert rows["1"]["user_properties"] == {"visits": 1}  # not retroactive
    assert rows["2"]["user_properties"] == {"visits": 5, "plan": "pro"}


def test_identify_of_a_new_user_applies_to_their_first_event(
    client: TestClient, keys: Keys
) -> None:
    resp = identify_form(
        client,
        "/identify",
        keys.api_key,
        [{"user_id": "fresh-user", "device_id": "fresh-dev", "user_properties": {"tier": "gold"}}],
    )
    assert (resp.status_code, resp.text) == (200, "success")
    post(client, keys, [{"device_id": "fresh-dev", "event_type": "anon", "insert_id": "1"}])
    post(client, keys, [{"user_id": "fresh-user", "event_type": "known", "insert_id": "2"}])
    rows = by_insert_id(exported(client, keys))
    assert rows["1"]["user_properties"] == {"tier": "gold"}
    assert rows["2"]["user_properties"] == {"tier": "gold"}
    assert rows["1"]["amplitude_id"] == rows["2"]["amplitude_id"]


def test_identify_with_an_unknown_key_is_refused(client: TestClient, keys: Keys) -> None:
    resp = identify_form(client, "/identify", "nope" * 8, {"user_id": "ident-user"})
    assert resp.status_code == 400
    assert resp.json() == {"code": 400, "error": f"Invalid API key: {'nope' * 8}"}


def test_group_identify_then_event_shows_group_properties(client: TestClient, keys: Keys) -> None:
    resp = identify_form(
        client,
        "/groupidentify",
        keys.api_key,
        [{"group_type": "org", "group_value": "acme", "group_properties": {"$set": {"size": 10}}}],
    )
    assert (resp.status_code, resp.text) == (200, "success")
    post(
        client,
        keys,
        [
            {
                "user_id": "group-user",
                "event_type": "in group",
                "insert_id": "1",
                "groups": {"org": "acme", "team": ["red", "blue"]},
            },
            {"user_id": "group-user", "event_type": "no group", "insert_id": "2"},
        ],
    )
    rows = by_insert_id(exported(client, keys))
    assert rows["1"]["groups"] == {"org": ["acme"], "team": ["red", "blue"]}
    assert rows["1"]["group_properties"] == {
        "org": {"acme": {"size": 10}},
        "team": {"red": {}, "blue": {}},
    }
    assert rows["2"]["groups"] == {}
    assert rows["2"]["group_properties"] == {}


def test_groupidentify_event_type_updates_group_properties(client: TestClient, keys: Keys) -> None:
    post(
        client,
        keys,
        [
            {
                "user_id": "group-user",
                "event_type": "$groupidentify",
                "insert_id": "1",
                "groups": {"org": "acme"},
                "group_properties": {"$set": {"plan": "enterprise"}},
            },
            {
                "user_id": "group-user",
                "event_type": "later",
                "insert_id": "2",
                "groups": {"org": "acme"},
            },
        ],
    )
    rows = by_insert_id(exported(client, keys))
    assert rows["2"]["group_properties"] == {"org": {"acme": {"plan": "enterprise"}}}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_identify_accepts_get_query_and_post_form(
    client: TestClient, keys: Keys, method: str
) -> None:
    params = {
        "api_key": keys.api_key,
        "identification": orjson.dumps(
            {"user_id": "query-user", "user_properties": {"via": method}}
        ).decode(),
    }
    if method == "GET":
        resp = client.get("/identify", params=params)
    else:
        resp = client.post("/identify", files={k: (None, v) for k, v in params.items()})
    assert (resp.status_code, resp.text) == (200, "success")
    post(client, keys, [{"user_id": "query-user", "event_type": "e", "insert_id": "1"}])
    [row] = exported(client, keys)
    assert row["user_properties"] == {"via": method}


def test_healthz(client: TestClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_readyz_lists_every_check_and_passes_when_storage_works(client: TestClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"log", "seal", "metadata", "backlog"}
    assert all(check["ok"] for check in body["checks"].values())
    assert resp.headers["cache-control"] == "no-store"


def restarted(client: TestClient) -> TestClient:
    """Close the app (sealing everything) and open a new one on the same data directory."""
    settings = client.app.state.swell.settings  # type: ignore[attr-defined]
    client.__exit__(None, None, None)
    return TestClient(create_app(settings), raise_server_exceptions=False).__enter__()


def test_group_identify_after_a_restart_updates_the_saved_group_state(
    client: TestClient, keys: Keys
) -> None:
    group = {"group_type": "org", "group_value": "acme"}
    identify_form(
        client,
        "/groupidentify",
        keys.api_key,
        {**group, "group_properties": {"$set": {"size": 10, "tier": "gold"}}},
    )
    client = restarted(client)
    try:
        resp = identify_form(
            client,
            "/groupidentify",
            keys.api_key,
            {**group, "group_properties": {"$add": {"size": 5}}},
        )
        assert (resp.status_code, resp.text) == (200, "success")
        post(
            client,
            keys,
            [
                {
                    "user_id": "group-user",
                    "event_type": "e",
                    "insert_id": "1",
                    "groups": {"org": "acme"},
                }
            ],
        )
        [row] = exported(client, keys)
        assert row["group_properties"] == {"org": {"acme": {"size": 15, "tier": "gold"}}}
    finally:
        client.__exit__(None, None, None)


def test_identify_after_a_restart_updates_the_saved_user_state(
    client: TestClient, keys: Keys
) -> None:
    post(
        client,
        keys,
        [
            {
                "user_id": "saved-user",
                "event_type": "e",
                "insert_id": "1",
                "user_properties": {"$set": {"visits": 1, "plan": "free"}},
            }
        ],
    )
    client = restarted(client)
    try:
        identify_form(
            client,
            "/identify",
            keys.api_key,
            {"user_id": "saved-user", "user_properties": {"$add": {"visits": 1}}},
        )
        post(
            client,
            keys,
            [
                {"user_id": "saved-user", "event_type": "e", "insert_id": "2"},
                {"user_id": "saved-user", "event_type": "e", "insert_id": "1"},
            ],
        )
        rows = by_insert_id(exported(client, keys))
        assert sorted(rows) == ["1", "2"]  # the retried insert_id is still a duplicate
        assert rows["2"]["user_properties"] == {"visits": 2, "plan": "free"}
        assert rows["2"]["amplitude_id"] == rows["1"]["amplitude_id"]
    finally:
        client.__exit__(None, None, None)


def test_response_server_upload_time_is_the_stored_one(client: TestClient, keys: Keys) -> None:
    resp = post(client, keys, [{"user_id": "user-0001", "event_type": "e", "insert_id": "1"}])
    [row] = exported(client, keys)
    stored = ts(row["server_upload_time"])
    assert resp.json()["server_upload_time"] == int(stored.timestamp() * 1000)


def test_numeric_ids_sent_as_floats_are_kept(client: TestClient, keys: Keys) -> None:
    post(
        client,
        keys,
        [
            {
                "user_id": "user-0001",
                "event_type": "e",
                "insert_id": "1",
                "event_id": 7.0,
                "session_id": 1_751_387_600_000.0,
            }
        ],
    )
    [row] = exported(client, keys)
    assert (row["event_id"], row["session_id"]) == (7, 1_751_387_600_000)
    assert type(row["event_id"]) is int
    assert type(row["session_id"]) is int


@pytest.mark.parametrize(("trust", "expected"), [(False, "testclient"), (True, "198.51.100.4")])
def test_remote_ip_uses_x_forwarded_for_only_when_trusted(
    settings: Settings, trust: bool, expected: str
) -> None:
    with TestClient(create_app(settings.replace(trust_forwarded_for=trust))) as client:
        keys = create_keys(client)
        body = orjson.dumps(
            {
                "api_key": keys.api_key,
                "events": [{"user_id": "user-0001", "event_type": "e", "ip": "$remote"}],
            }
        )
        resp = client.post(
            "/2/httpapi", content=body, headers={"X-Forwarded-For": "198.51.100.4, 10.0.0.1"}
        )
        assert resp.status_code == 200
        [row] = exported(client, keys)
    assert row["ip_address"] == expected


def _multipart_body(fields: dict[str, str], boundary: str = "b0und") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def test_identify_multipart_is_accepted(client: TestClient, keys: Keys) -> None:
    ident = {"user_id": "multipart-user", "user_properties": {"$set": {"plan": "team"}}}
    body = _multipart_body(
        {"api_key": keys.api_key, "identification": orjson.dumps(ident).decode()}
    )
    resp = client.post(
        "/identify", content=body, headers={"content-type": "multipart/form-data; boundary=b0und"}
    )
    assert (resp.status_code, resp.text) == (200, "success")
    post(client, keys, [{"user_id": "multipart-user", "event_type": "e", "insert_id": "m1"}])
    assert by_insert_id(exported(client, keys))["m1"]["user_properties"] == {"plan": "team"}


def test_identify_body_is_bounded_without_content_length(client: TestClient, keys: Keys) -> None:
    """A chunked multipart body declares no size: the 1 MB bound applies as the bytes arrive."""
    body = _multipart_body({"api_key": keys.api_key, "pad": "x" * 1_100_000})

    def chunks() -> Any:
        for i in range(0, len(body), 64_000):
            yield body[i : i + 64_000]

    resp = client.post(
        "/identify",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b0und"},
    )
    assert resp.status_code == 413
    assert resp.json() == {"code": 413, "error": "Payload too large"}
