"""Property test over HTTP: any batch of well-typed events, with arbitrary property operations,
values and string lengths, is stored whole and read back by the Export API as 55-key records.

The parser's own properties (tests/unit/test_ingest.py) cover malformed input; this covers what
happens after validation (identity, user and group property operations, the record, the log,
sealing and export), where a value the validator lets through must never become a 500.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.testclient import TestClient

from swell.model import EXPORT_KEYS
from swell.userprops import OPERATIONS
from tests.conftest import Keys, hours_around_now, zip_lines
from tests.strategies import json_values

INT64 = st.integers(-(2**63), 2**63 - 1)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
#: Every user-property operation, plus a plain key (an implicit $set).
operations = st.dictionaries(
    st.sampled_from([*OPERATIONS, "plain"]),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), json_values, max_size=3) | json_values,
    max_size=4,
)
#: Scalars a string column accepts, including strings past the 1024-character cap.
scalars = (
    st.text(max_size=20)
    | st.text(alphabet="ab", min_size=1000, max_size=1100)
    | st.integers(-(2**63), 2**64 - 1)
    | st.booleans()
    | FINITE
    | st.none()
)
STRING_FIELDS = [
    "platform",
    "ip",
    "language",
    "library",
    "app_version",
    "version_name",
    "user_agent",
    "carrier",
    "os_name",
    "country",
    "productId",
    "revenueType",
]
events = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["Clicked", "$identify", "$groupidentify"]),
        "user_id": st.sampled_from(["user-one", "user-two"]) | st.none(),
        "device_id": st.sampled_from(["-1", "-2"]),  # made unique per example below
    },
    optional={
        "user_properties": operations,
        "group_properties": operations,
        "groups": st.dictionaries(
            st.sampled_from(["org", "team"]),
            st.text(max_size=5) | st.lists(st.text(max_size=5) | INT64, max_size=3) | INT64,
            max_size=2,
        ),
        "event_properties": st.dictionaries(st.text(max_size=5), json_values | scalars, max_size=5),
        "plan": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "time": st.integers(0, 4_102_444_799_999) | st.floats(0, 4e12),
        "session_id": INT64 | st.floats(-1e18, 1e18),
        "event_id": INT64,
        "location_lat": FINITE | INT64,
        "price": FINITE | INT64,
        "quantity": INT64,
        "revenue": FINITE,
        "insert_id": st.sampled_from(["x-1", "x-2", "x-3"]),
        "paying": json_values,
        "$skip_user_properties_sync": st.booleans(),
        **dict.fromkeys(STRING_FIELDS, scalars),
    },
)


@settings(
    max_examples=120,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(events, min_size=1, max_size=4),
    path=st.sampled_from(["/2/httpapi", "/batch"]),
)
def test_any_well_typed_batch_is_stored_whole_and_exported(
    client: TestClient, keys: Keys, batch: list[dict[str, Any]], path: str
) -> None:
    # Fresh user and device ids per example, so examples never share identity or dedup state.
    tag = uuid.uuid4().hex
    for event in batch:
        event["device_id"] = tag + event["device_id"]
        if event["user_id"] is not None:
            event["user_id"] = f"{event['user_id']}-{tag}"
    body = orjson.dumps({"api_key": keys.api_key, "events": batch})

    reply = client.post(path, content=body)

    assert reply.status_code == 200, reply.text
    assert reply.json()["events_ingested"] == len(batch)
    # Only the first event with a given (device, insert_id) is stored.
    firsts: set[tuple[str, str]] = set()
    expected = []
    for event in batch:
        key = (event["device_id"], event.get("insert_id"))
        if key[1] is None or key not in firsts:
            firsts.add(key)
            expected.append(event["event_type"])
    exported = client.get("/api/2/export", params=hours_around_now(), auth=keys.export_auth)
    assert exported.status_code == 200, exported.text
    records = [orjson.loads(line) for line in zip_lines(exported.content)]
    mine = [r for r in records if r["device_id"].startswith(tag)]
    assert sorted(r["event_type"] for r in mine) == sorted(expected)
    for record in mine:
        assert list(record) == list(EXPORT_KEYS)
        assert record["user_id"] is None or record["user_id"].endswith(tag)
        for value in (record["event_properties"], record["user_properties"], record["plan"]):
            assert isinstance(value, dict)
