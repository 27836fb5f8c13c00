from __future__ import annotations

import copy
import uuid as uuidlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.enrich import (
    RequestContext,
    build_record,
    format_us,
    language_name,
    new_uuid,
    parse_user_agent,
)
from swell.errors import BadRequest, PayloadTooLarge
from swell.ingest import parse_events_body
from swell.model import EPOCH, EXPORT_KEYS, format_ts

# Verbatim 2025 HTTP V2 export line (amplitude-wire-facts.md §1.5, source S16).
GOLDEN = (
    b'{"$insert_id":"Property Drop Purchased:2","$insert_key":null,"$schema":null,"adid":null,'
    b'"amplitude_attribution_ids":null,"amplitude_event_type":null,"amplitude_id":1263130950579,'
    b'"app":636686,"city":null,"client_event_time":"2025-07-01 16:34:54.837000",'
    b'"client_upload_time":"2025-07-01 17:14:33.145000","country":null,"data":{"path":"/2/httpapi",'
    b'"user_properties_updated":true,"group_first_event":{},"group_ids":{}},"data_type":"event",'
    b'"device_brand":null,"device_carrier":null,"device_family":null,'
    b'"device_id":"f48913e6-c106-5429-a296-9f9588859c3b","device_manufacturer":null,'
    b'"device_model":null,"device_type":null,"dma":null,"event_id":991179682,"event_properties":'
    b'{"Total Price":6396.0,"Drop Id":2,"Number of Shares":20,"Drop Type":"Sale",'
    b'"Price per Share":312.0,"Property":"Property 0"},"event_time":"2025-07-01 16:34:54.837000",'
    b'"event_type":"Property Drop Purchased","global_user_properties":null,"group_properties":{},'
    b'"groups":{},"idfa":null,"ip_address":null,"is_attribution_event":null,"language":null,'
    b'"library":"http/2.0","location_lat":null,"location_lng":null,"os_name":null,'
    b'"os_version":null,"partner_id":null,"paying":null,"plan":{},"platform":null,'
    b'"processed_time":"2025-07-01 17:14:33.693000","region":null,"sample_rate":null,'
    b'"server_received_time":"2025-07-01 17:14:33.145000",'
    b'"server_upload_time":"2025-07-01 17:14:33.149000","session_id":-1,"source_id":null,'
    b'"start_version":null,"user_creation_time":null,'
    b'"user_id":"2b59c518-dc2b-43f6-9444-85a84d5b1e1f","user_properties":{},'
    b'"uuid":"a6ec45f6-0016-4907-b433-5bf4e4a56908","version_name":null}'
)
RECEIVED = datetime(2025, 7, 1, 17, 14, 33, 145000, tzinfo=UTC)
MAC_CHROME = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/86.0.4240.198 Safari/537.36"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/86.0.4240.198 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


def context(
    *,
    client_upload: datetime | None = None,
    path: str = "/2/httpapi",
    library: str = "http/2.0",
    remote_ip: str | None = "203.0.113.9",
) -> RequestContext:
    return RequestContext(
        project_id=636686,
        path=path,
        default_library=library,
        server_received=RECEIVED,
        server_upload=RECEIVED + timedelta(milliseconds=4),
        client_upload=client_upload,
        remote_ip=remote_ip,
    )


def record(
    event: dict[str, Any],
    ctx: RequestContext | None = None,
    *,
    user_properties: dict[str, Any] | None = None,
    group_properties: dict[str, Any] | None = None,
    updated: bool = False,
) -> dict[str, Any]:
    return build_record(
        {"event_type": "e", "device_id": "device-1", **event},
        ctx or context(),
        amplitude_id=7,
        user_properties=user_properties or {},
        group_properties=group_properties or {},
        event_id=1,
        uuid="00000000-0000-4000-8000-000000000000",
        processed=RECEIVED + timedelta(milliseconds=548),
        user_properties_updated=updated,
    )


def test_golden_2025_row_is_reproduced_byte_for_byte() -> None:
    event = {
        "user_id": "2b59c518-dc2b-43f6-9444-85a84d5b1e1f",
        "device_id": "f48913e6-c106-5429-a296-9f9588859c3b",
        "event_type": "Property Drop Purchased",
        "insert_id": "Property Drop Purchased:2",
        "time": 1751387694837,
        "event_properties": {
            "Total Price": 6396.0,
            "Drop Id": 2,
            "Number of Shares": 20,
            "Drop Type": "Sale",
            "Price per Share": 312.0,
            "Property": "Property 0",
        },
    }
    result = build_record(
        event,
        context(remote_ip="198.51.100.1"),
        amplitude_id=1263130950579,
        user_properties={},
        group_properties={},
        event_id=991179682,
        uuid="a6ec45f6-0016-4907-b433-5bf4e4a56908",
        processed=datetime(2025, 7, 1, 17, 14, 33, 693000, tzinfo=UTC),
        user_properties_updated=True,
    )
    assert orjson.dumps(result) == GOLDEN


def test_record_has_the_55_keys_in_sorted_order() -> None:
    result = record({"user_agent": MAC_CHROME, "price": 1, "groups": {"a": "b"}})
    assert list(result) == list(EXPORT_KEYS)
    assert len(result) == 55
    assert list(EXPORT_KEYS) == sorted(EXPORT_KEYS)


def test_event_is_not_mutated() -> None:
    event = {
        "event_type": "e" * 2000,
        "device_id": "device-1",
        "event_properties": {"long": "x" * 2000, "nested": [{"s": "y" * 2000}]},
        "groups": {"org": "acme"},
        "price": 3,
        "ip": "$remote",
        "language": "en-US",
        "user_agent": MAC_CHROME,
    }
    before = copy.deepcopy(event)
    record(event)
    assert event == before


# -- timestamps ------------------------------------------------------------------------------------


def test_times_without_client_upload_or_event_time() -> None:
    result = record({})
    assert result["server_received_time"] == "2025-07-01 17:14:33.145000"
    assert result["server_upload_time"] == "2025-07-01 17:14:33.149000"
    assert result["processed_time"] == "2025-07-01 17:14:33.693000"
    assert result["client_upload_time"] == "2025-07-01 17:14:33.145000"
    assert result["client_event_time"] == "2025-07-01 17:14:33.145000"
    assert result["event_time"] == "2025-07-01 17:14:33.145000"


def test_client_event_time_defaults_to_client_upload_time() -> None:
    upload = RECEIVED - timedelta(minutes=10)
    result = record({}, context(client_upload=upload))
    assert result["client_upload_time"] == "2025-07-01 17:04:33.145000"
    assert result["client_event_time"] == "2025-07-01 17:04:33.145000"
    assert result["event_time"] == "2025-07-01 17:14:33.145000"  # shifted by the 10 min skew


TIME_MS = 1751387694837  # 2025-07-01 16:34:54.837


@pytest.mark.parametrize(
    ("skew", "expected_event_time"),
    [
        (timedelta(0), "2025-07-01 16:34:54.837000"),
        (timedelta(seconds=59, microseconds=999999), "2025-07-01 16:34:54.837000"),
        (timedelta(seconds=60), "2025-07-01 16:35:54.837000"),
        (timedelta(hours=2, milliseconds=1), "2025-07-01 18:34:54.838000"),
        (-timedelta(seconds=59, microseconds=999999), "2025-07-01 16:34:54.837000"),
        (-timedelta(seconds=60), "2025-07-01 16:33:54.837000"),
        (-timedelta(days=1), "2025-06-30 16:34:54.837000"),
    ],
)
def test_event_time_is_adjusted_only_for_skew_of_60s_or_more(
    skew: timedelta, expected_event_time: str
) -> None:
    # skew = server_received - client_upload: positive when the device clock is behind.
    result = record({"time": TIME_MS}, context(client_upload=RECEIVED - skew))
    assert result["client_event_time"] == "2025-07-01 16:34:54.837000"
    assert result["client_upload_time"] == format_ts(RECEIVED - skew)
    assert result["event_time"] == expected_event_time


def test_float_time_is_truncated_to_ms() -> None:
    assert record({"time": 1751387694837.9})["client_event_time"] == "2025-07-01 16:34:54.837000"


@given(us=st.integers(-(10**15), 4 * 10**15))
def test_format_us_matches_format_ts(us: int) -> None:
    assert format_us(us) == format_ts(EPOCH + timedelta(microseconds=us))


# -- columns ---------------------------------------------------------------------------------------


def test_renamed_and_copied_columns() -> None:
    event = {
        "user_id": "user-1",
        "insert_id": "ins-1",
        "app_version": "2.3.4",
        "carrier": "Verizon",
        "platform": "iOS",
        "os_name": "ios",
        "os_version": "18.1.1",
        "device_brand": "Apple",
        "device_manufacturer": "Apple",
        "device_model": "iPhone13,2",
        "country": "United States",
        "region": "Michigan",
        "city": "Grand Blanc",
        "dma": "Flint-Saginaw-Bay City, MI",
        "location_lat": 42.9,
        "location_lng": -83.6,
        "idfa": "idfa-1",
        "adid": "adid-1",
        "partner_id": "partner",
        "paying": True,
        "start_version": "1.0",
        "session_id": 1751387694000,
        "library": "amplitude-swift/1.0",
        "plan": {"branch": "main", "source": "ios", "version": "1"},
    }
    result = record(event)
    assert {k: result[k] for k in result if result[k] is not None} == {
        "$insert_id": "ins-1",
        "adid": "adid-1",
        "amplitude_id": 7,
        "app": 636686,
        "city": "Grand Blanc",
        "client_event_time": "2025-07-01 17:14:33.145000",
        "client_upload_time": "2025-07-01 17:14:33.145000",
        "country": "United States",
        "data": {"path": "/2/httpapi", "group_first_event": {}, "group_ids": {}},
        "data_type": "event",
        "device_brand": "Apple",
        "device_carrier": "Verizon",
        "device_id": "device-1",
        "device_manufacturer": "Apple",
        "device_model": "iPhone13,2",
        "dma": "Flint-Saginaw-Bay City, MI",
        "event_id": 1,
        "event_properties": {},
        "event_time": "2025-07-01 17:14:33.145000",
        "event_type": "e",
        "group_properties": {},
        "groups": {},
        "idfa": "idfa-1",
        "library": "amplitude-swift/1.0",
        "location_lat": 42.9,
        "location_lng": -83.6,
        "os_name": "ios",
        "os_version": "18.1.1",
        "partner_id": "partner",
        "paying": True,
        "plan": {"branch": "main", "source": "ios", "version": "1"},
        "platform": "iOS",
        "processed_time": "2025-07-01 17:14:33.693000",
        "region": "Michigan",
        "server_received_time": "2025-07-01 17:14:33.145000",
        "server_upload_time": "2025-07-01 17:14:33.149000",
        "session_id": 1751387694000,
        "start_version": "1.0",
        "user_id": "user-1",
        "user_properties": {},
        "uuid": "00000000-0000-4000-8000-000000000000",
        "version_name": "2.3.4",
    }


def test_version_name_falls_back_to_version_name_key() -> None:
    assert record({"version_name": "9.9"})["version_name"] == "9.9"
    assert record({"version_name": "9.9", "app_version": "1.0"})["version_name"] == "1.0"


def test_defaults() -> None:
    result = record({})
    assert result["session_id"] == -1
    assert result["library"] == "http/2.0"
    assert result["$insert_id"] is None
    assert result["ip_address"] is None
    assert all(result[k] == {} for k in ("event_properties", "groups", "plan", "user_properties"))
    batch = record({}, context(path="/batch", library="batch/1.0"))
    assert batch["library"] == "batch/1.0"
    assert batch["data"]["path"] == "/batch"


def test_data_marks_user_properties_updated_only_when_true() -> None:
    assert record({}, updated=True)["data"] == {
        "path": "/2/httpapi",
        "user_properties_updated": True,
        "group_first_event": {},
        "group_ids": {},
    }
    assert "user_properties_updated" not in record({}, updated=False)["data"]


def test_ip_remote_uses_the_request_address() -> None:
    assert record({"ip": "$remote"})["ip_address"] == "203.0.113.9"
    assert record({"ip": "$remote"}, context(remote_ip=None))["ip_address"] is None
    assert record({"ip": "192.0.2.1"})["ip_address"] == "192.0.2.1"


def test_groups_values_become_arrays() -> None:
    result = record({"groups": {"org": "acme", "teams": ["a", "b"], "n": 5}})
    assert result["groups"] == {"org": ["acme"], "teams": ["a", "b"], "n": [5]}


def test_properties_come_from_arguments() -> None:
    user = {"plan": "pro"}
    groups = {"org": {"acme": {"tier": 1}}}
    result = record(
        {"user_properties": {"$set": {"x": 1}}, "group_properties": {"ignored": 1}},
        user_properties=user,
        group_properties=groups,
    )
    assert result["user_properties"] == {"plan": "pro"}
    assert result["group_properties"] == {"org": {"acme": {"tier": 1}}}


def test_revenue_fields_move_into_event_properties() -> None:
    event = {
        "event_properties": {"sku": "A1"},
        "price": 9.99,
        "quantity": 2,
        "revenue": 19.98,
        "productId": "A1",
        "revenueType": "purchase",
    }
    result = record(event)
    assert result["event_properties"] == {
        "sku": "A1",
        "$price": 9.99,
        "$quantity": 2,
        "$revenue": 19.98,
        "$productId": "A1",
        "$revenueType": "purchase",
    }
    assert "price" not in result
    assert record({"revenue": 5})["event_properties"] == {"$revenue": 5}


def test_long_strings_are_truncated_to_1024() -> None:
    event = {
        "event_type": "t" * 1500,
        "user_id": "u" * 1024,
        "city": "c" * 1025,
        "event_properties": {"s": "p" * 3000, "deep": {"list": ["q" * 1025, "ok"]}, "n": 1},
        "groups": {"org": "g" * 2000},
    }
    result = record(event, user_properties={"name": "n" * 1100})
    assert result["event_type"] == "t" * 1024
    assert result["user_id"] == "u" * 1024
    assert result["city"] == "c" * 1024
    assert result["event_properties"] == {
        "s": "p" * 1024,
        "deep": {"list": ["q" * 1024, "ok"]},
        "n": 1,
    }
    assert result["groups"] == {"org": ["g" * 1024]}
    assert result["user_properties"] == {"name": "n" * 1024}


def test_short_properties_are_shared_not_copied() -> None:
    props = {"a": "x", "b": [1, {"c": "y"}]}
    assert record({"event_properties": props})["event_properties"] is props


def test_non_string_scalars_in_string_columns_become_strings() -> None:
    result = record({"platform": 5, "country": True, "os_version": 17.5})
    assert (result["platform"], result["country"], result["os_version"]) == ("5", "true", "17.5")


# -- user agent and language -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ua", "expected"),
    [
        (
            MAC_CHROME,
            {
                "os_name": "Chrome",
                "os_version": "86",
                "device_family": "Mac OS",
                "device_model": "Mac OS",
                "device_type": None,
            },
        ),
        (
            WINDOWS_CHROME,
            {
                "os_name": "Chrome",
                "os_version": "86",
                "device_family": "Windows",
                "device_model": "Windows",
                "device_type": "Windows",
            },
        ),
        (
            IPHONE_SAFARI,
            {
                "os_name": "Mobile Safari",
                "os_version": "17",
                "device_family": "Apple iPhone",
                "device_model": "iPhone",
                "device_type": "Apple iPhone",
            },
        ),
        (
            "curl/8.0",
            {
                "os_name": "curl",
                "os_version": "8",
                "device_family": None,
                "device_model": None,
                "device_type": None,
            },
        ),
        (
            "garbage",
            {
                "os_name": None,
                "os_version": None,
                "device_family": None,
                "device_model": None,
                "device_type": None,
            },
        ),
    ],
)
def test_parse_user_agent(ua: str, expected: dict[str, str | None]) -> None:
    assert parse_user_agent(ua) == expected


def test_user_agent_fills_only_unsent_columns() -> None:
    result = record({"user_agent": WINDOWS_CHROME, "os_name": "Edge"})
    assert result["os_name"] == "Edge"
    assert result["os_version"] == "86"
    assert result["device_family"] == "Windows"
    assert result["device_type"] == "Windows"


def test_user_agent_matches_amplitudes_2020_mac_row() -> None:
    # amplitude2java sample: os_name Chrome, os_version 86, device_family/model "Mac OS", type null.
    result = record({"user_agent": MAC_CHROME, "platform": "Web"})
    assert (
        result["os_name"],
        result["os_version"],
        result["device_family"],
        result["device_model"],
        result["device_type"],
    ) == ("Chrome", "86", "Mac OS", "Mac OS", None)


@pytest.mark.parametrize(
    ("tag", "name"),
    [
        ("en-US", "English"),
        ("en", "English"),
        ("fr-FR", "French"),
        ("da", "Danish"),
        ("zh-Hant-TW", "Chinese"),
        ("English", "English"),
        ("xx-YY", "xx-YY"),
        ("und", "und"),
        ("not a tag", "not a tag"),
    ],
)
def test_language_tags_become_names(tag: str, name: str) -> None:
    assert language_name(tag) == name
    assert record({"language": tag})["language"] == name


# -- uuid ------------------------------------------------------------------------------------------


def test_new_uuid_is_a_canonical_v4() -> None:
    seen = set()
    for _ in range(2000):
        value = new_uuid()
        parsed = uuidlib.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuidlib.RFC_4122
        assert str(parsed) == value
        seen.add(value)
    assert len(seen) == 2000


# -- property: everything the parser accepts can be enriched and serialised ------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)
field_values = (
    json_values
    | st.integers(0, 4_102_444_799_999)
    | st.floats(-1e20, 1e20)
    | st.sampled_from(["$remote", "en-US", MAC_CHROME, IPHONE_SAFARI, "x" * 1100])
)
events = st.dictionaries(
    st.sampled_from(
        [
            "time",
            "session_id",
            "event_id",
            "event_properties",
            "user_properties",
            "groups",
            "group_properties",
            "plan",
            "location_lat",
            "price",
            "quantity",
            "productId",
            "insert_id",
            "platform",
            "os_name",
            "ip",
            "language",
            "library",
            "user_agent",
            "app_version",
            "paying",
            "carrier",
        ]
    ),
    field_values,
    max_size=10,
).map(lambda e: {"event_type": "e", "device_id": "device-1", **e})


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event=events, skew_s=st.integers(-(10**9), 10**9))
def test_every_accepted_event_becomes_a_serialisable_record(
    event: dict[str, Any], skew_s: int
) -> None:
    try:
        batch = parse_events_body(
            orjson.dumps({"api_key": "k", "events": [event]}), max_bytes=10**6
        )
    except (BadRequest, PayloadTooLarge):
        return
    ctx = context(client_upload=RECEIVED - timedelta(seconds=skew_s))
    result = record(batch.events[0], ctx)
    assert list(result) == list(EXPORT_KEYS)
    line = orjson.loads(orjson.dumps(result))
    for key in ("client_event_time", "event_time", "client_upload_time", "processed_time"):
        assert len(line[key]) == 26
    assert isinstance(line["session_id"], int)
    assert all(isinstance(v, list) for v in line["groups"].values())
