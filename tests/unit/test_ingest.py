from __future__ import annotations

import contextlib
import gzip
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from swell.errors import BadRequest, PayloadTooLarge
from swell.ingest import (
    BATCH_MAX_BYTES,
    HTTPAPI_MAX_BYTES,
    INVALID_IDS,
    MAX_EVENTS,
    Batch,
    decode_body,
    parse_events_body,
    parse_identify_form,
)
from tests.strategies import json_values

UID = "user-12345"
DID = "device-12345"


def body(doc: Any) -> bytes:
    return orjson.dumps(doc)


def events_body(*events: Any, **top: Any) -> bytes:
    return body({"api_key": "key", "events": list(events), **top})


def ev(**fields: Any) -> dict[str, Any]:
    return {"event_type": "Clicked", "user_id": UID, **fields}


def wire(exc: BadRequest | PayloadTooLarge) -> dict[str, object]:
    """The ingestion error body as the API renders it (minus ``code``)."""
    return {"error": exc.message, **exc.extra}


def reject(raw: bytes, max_bytes: int = HTTPAPI_MAX_BYTES) -> dict[str, object]:
    with pytest.raises(BadRequest) as info:
        parse_events_body(raw, max_bytes=max_bytes)
    return wire(info.value)


def accept(raw: bytes, max_bytes: int = HTTPAPI_MAX_BYTES) -> Batch:
    return parse_events_body(raw, max_bytes=max_bytes)


# -- decode_body ---------------------------------------------------------------------------------


def test_decode_body_passes_plain_bodies_through() -> None:
    assert decode_body(b'{"a":1}', None, 100) == b'{"a":1}'
    assert decode_body(b'{"a":1}', "identity", 100) == b'{"a":1}'
    assert decode_body(b"", None, 100) == b""


def test_decode_body_gunzips_with_header() -> None:
    payload = events_body(ev())
    assert decode_body(gzip.compress(payload), "gzip", HTTPAPI_MAX_BYTES) == payload
    assert decode_body(gzip.compress(payload), "x-gzip", HTTPAPI_MAX_BYTES) == payload
    assert decode_body(gzip.compress(payload), "GZIP", HTTPAPI_MAX_BYTES) == payload


def test_decode_body_detects_gzip_magic_without_header() -> None:
    payload = events_body(ev())
    assert decode_body(gzip.compress(payload), None, HTTPAPI_MAX_BYTES) == payload


def test_decode_body_joins_concatenated_gzip_members() -> None:
    raw = gzip.compress(b'{"a":') + gzip.compress(b"1}") + b"\x00\x00"
    assert decode_body(raw, "gzip", 100) == b'{"a":1}'


@pytest.mark.parametrize(
    "raw",
    [
        b"\x1f\x8b not really gzip",
        gzip.compress(b'{"api_key": "k"}', mtime=0)[:-12],  # truncated
        gzip.compress(b"{}", mtime=0) + b"garbage",
    ],
    ids=["not-gzip", "truncated", "trailing-garbage"],
)
def test_decode_body_rejects_corrupt_gzip(raw: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        decode_body(raw, "gzip", HTTPAPI_MAX_BYTES)
    assert info.value.message.startswith("Invalid gzip request body")


def test_decode_body_rejects_plain_text_declared_as_gzip() -> None:
    with pytest.raises(BadRequest, match="Invalid gzip request body"):
        decode_body(b'{"a":1}', "gzip", 100)


def test_decode_body_rejects_unknown_encoding() -> None:
    with pytest.raises(BadRequest, match="Unsupported Content-Encoding: br"):
        decode_body(b"xx", "br", 100)


def test_decode_body_size_limit_is_inclusive() -> None:
    assert decode_body(b"x" * 100, None, 100) == b"x" * 100
    assert decode_body(gzip.compress(b"x" * 100), "gzip", 100) == b"x" * 100
    with pytest.raises(PayloadTooLarge):
        decode_body(b"x" * 101, None, 100)
    with pytest.raises(PayloadTooLarge):
        decode_body(gzip.compress(b"x" * 101), "gzip", 100)


def test_decode_body_gzip_bomb_is_bounded_in_memory() -> None:
    bomb = gzip.compress(b"\x00" * 200_000_000, compresslevel=9)  # ~200 KB -> 200 MB
    assert len(bomb) < 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decode_body(bomb, "gzip", HTTPAPI_MAX_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * HTTPAPI_MAX_BYTES


# -- parse_events_body: request-level errors ---------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"  \n"])
def test_empty_body_is_missing_request_body(raw: bytes) -> None:
    assert reject(raw) == {"error": "Missing request body"}


@pytest.mark.parametrize(
    "raw", [b"{", b"not json", b"[]", b'"text"', b"42", b"null", b"\xff\xfe{}", b'{"a":NaN}']
)
def test_non_object_body_is_invalid_json(raw: bytes) -> None:
    assert reject(raw) == {"error": "Invalid JSON request body"}


@pytest.mark.parametrize(
    "doc",
    [
        {"events": [ev()]},
        {"api_key": "", "events": [ev()]},
        {"api_key": 12345, "events": [ev()]},
        {"api_key": None, "events": [ev()]},
    ],
)
def test_bad_api_key_is_missing_field(doc: dict[str, Any]) -> None:
    assert reject(body(doc)) == {
        "error": "Request missing required field",
        "missing_field": "api_key",
    }


@pytest.mark.parametrize(
    "doc",
    [
        {"api_key": "k"},
        {"api_key": "k", "events": []},
        {"api_key": "k", "events": {"0": ev()}},
        {"api_key": "k", "events": None},
        {"api_key": "k", "event": [ev()]},
    ],
)
def test_missing_or_empty_events_is_missing_field(doc: dict[str, Any]) -> None:
    assert reject(body(doc)) == {
        "error": "Request missing required field",
        "missing_field": "events",
    }


def test_api_key_is_checked_before_events() -> None:
    assert reject(body({})) == {
        "error": "Request missing required field",
        "missing_field": "api_key",
    }


def test_more_than_2000_events_is_payload_too_large() -> None:
    assert len(accept(events_body(*[ev()] * MAX_EVENTS), BATCH_MAX_BYTES).events) == 2000
    with pytest.raises(PayloadTooLarge) as info:
        parse_events_body(events_body(*[ev()] * (MAX_EVENTS + 1)), max_bytes=BATCH_MAX_BYTES)
    assert info.value.message == "Payload too large"
    assert info.value.status == 413


def test_body_over_max_bytes_is_payload_too_large() -> None:
    raw = events_body(ev(event_properties={"pad": "x" * 2000}))
    accept(raw, max_bytes=len(raw))
    with pytest.raises(PayloadTooLarge):
        parse_events_body(raw, max_bytes=len(raw) - 1)


def test_send_beacon_text_plain_body_parses() -> None:
    # navigator.sendBeacon posts a JSON string as text/plain;charset=UTF-8: only bytes matter here.
    raw = '{"api_key":"key","events":[{"event_type":"Ünïcode ✓","device_id":"dévice-1"}]}'
    batch = accept(raw.encode())
    assert batch.events == [{"event_type": "Ünïcode ✓", "device_id": "dévice-1"}]


def test_accepted_batch_carries_key_events_and_defaults() -> None:
    events = [ev(), ev(device_id=DID, user_id=None)]
    batch = accept(events_body(*events))
    assert batch == Batch(api_key="key", events=events, min_id_length=5, client_upload_time=None)


def test_extra_top_level_keys_are_tolerated() -> None:
    batch = accept(
        events_body(
            ev(),
            client_upload_time="2025-07-01T17:14:33.145Z",
            request_metadata={"sdk": {"metrics": {"histogram": {"a": 1}}}},
            whatever=[1, 2],
        )
    )
    assert batch.client_upload_time == datetime(2025, 7, 1, 17, 14, 33, 145000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        ({"client_upload_time": 1751390073145}, datetime(2025, 7, 1, 17, 14, 33, 145000, UTC)),
        (
            {"client_upload_time": "2025-07-01T19:14:33+02:00"},
            datetime(2025, 7, 1, 17, 14, 33, 0, UTC),
        ),
        ({"client_upload_time": "2025-07-01 17:14:33"}, datetime(2025, 7, 1, 17, 14, 33, 0, UTC)),
        ({"upload_time": 1751390073145}, datetime(2025, 7, 1, 17, 14, 33, 145000, UTC)),
        ({"upload_time": "1751390073145"}, datetime(2025, 7, 1, 17, 14, 33, 145000, UTC)),
        ({"client_upload_time": "yesterday"}, None),
        ({"client_upload_time": -5}, None),
        ({"client_upload_time": 10**16}, None),
        ({"client_upload_time": "9" * 5000}, None),
        ({"client_upload_time": True}, None),
        ({"client_upload_time": {"ms": 1}}, None),
        ({"client_upload_time": "0001-01-01T00:00:00+01:00"}, None),
    ],
)
def test_client_upload_time_parsing(top: dict[str, Any], expected: datetime | None) -> None:
    assert accept(events_body(ev(), **top)).client_upload_time == expected


def test_min_id_length_option_relaxes_the_length_rule() -> None:
    raw = events_body(ev(user_id="abc"), options={"min_id_length": 3})
    assert accept(raw).min_id_length == 3
    assert reject(events_body(ev(user_id="abc"), options={"min_id_length": 4})) == {
        "error": "Invalid id length for user_id or device_id",
        "events_with_invalid_id_lengths": {"user_id": [0]},
    }


@pytest.mark.parametrize("value", [0, -1, "5", 2.5, True])
def test_bad_min_id_length_is_rejected(value: object) -> None:
    assert reject(events_body(ev(), options={"min_id_length": value})) == {
        "error": "Invalid JSON request body",
        "invalid_field": "options.min_id_length",
    }


def test_options_must_be_an_object() -> None:
    assert reject(events_body(ev(), options="fast")) == {
        "error": "Invalid JSON request body",
        "invalid_field": "options",
    }


def test_null_options_mean_defaults() -> None:
    assert accept(events_body(ev(), options=None)).min_id_length == 5
    assert accept(events_body(ev(), options={"min_id_length": None})).min_id_length == 5


# -- parse_events_body: per-event errors -------------------------------------------------------


def test_missing_event_type_only_gives_missing_field_error_without_missing_field() -> None:
    # No top-level missing_field: SDKs would drop the whole batch instead of indexes 1 and 3.
    assert reject(events_body(ev(), {"user_id": UID}, ev(), {"device_id": DID})) == {
        "error": "Request missing required field",
        "events_with_missing_fields": {"event_type": [1, 3]},
    }


def test_null_event_type_is_missing() -> None:
    assert reject(events_body(ev(event_type=None))) == {
        "error": "Request missing required field",
        "events_with_missing_fields": {"event_type": [0]},
    }


@pytest.mark.parametrize("event_type", ["", 5, ["a"], {"a": 1}, True])
def test_empty_or_non_string_event_type_is_invalid(event_type: object) -> None:
    assert reject(events_body(ev(), ev(event_type=event_type))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"event_type": [1]},
    }


def test_event_without_any_id_is_missing_user_id_or_device_id() -> None:
    assert reject(events_body({"event_type": "a"}, ev(), ev(user_id=None, device_id=None))) == {
        "error": "Request missing required field",
        "events_with_missing_fields": {"user_id_or_device_id": [0, 2]},
    }


@pytest.mark.parametrize("field", ["user_id", "device_id"])
@pytest.mark.parametrize(
    "value", [*sorted(INVALID_IDS), "NULL", "Undefined", "ANONYMOUS", "N/A", "LMY47D"]
)
def test_invalid_ids_are_invalid_fields(field: str, value: str) -> None:
    event = {"event_type": "a", field: value}
    assert reject(events_body(ev(), event)) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {field: [1]},
    }


def test_all_zero_idfa_device_id_is_invalid() -> None:
    event = ev(device_id="00000000-0000-0000-0000-000000000000")
    assert reject(events_body(event)) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"device_id": [0]},
    }


@pytest.mark.parametrize("value", [12345678, 1.5, True, ["abcdef"], {"id": "abcdef"}])
def test_non_string_ids_are_invalid_fields(value: object) -> None:
    assert reject(events_body(ev(user_id=value))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"user_id": [0]},
    }


def test_overlong_id_is_invalid() -> None:
    assert accept(events_body(ev(user_id="u" * 1024))).events[0]["user_id"] == "u" * 1024
    assert reject(events_body(ev(user_id="u" * 1025))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"user_id": [0]},
    }


def test_short_ids_match_amplitudes_observed_400() -> None:
    # Verbatim shape from a captured Amplitude response (rudder-transformer fixture).
    assert reject(events_body(ev(user_id="abcd"))) == {
        "error": "Invalid id length for user_id or device_id",
        "events_with_invalid_id_lengths": {"user_id": [0]},
    }


def test_id_length_boundary_is_min_id_length() -> None:
    assert accept(events_body(ev(user_id="abcde", device_id="12345")))
    assert reject(events_body(ev(), ev(user_id=None, device_id="1234"))) == {
        "error": "Invalid id length for user_id or device_id",
        "events_with_invalid_id_lengths": {"device_id": [1]},
    }


def test_one_valid_id_does_not_excuse_a_bad_other_id() -> None:
    assert reject(events_body(ev(device_id="null"))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"device_id": [0]},
    }


def test_null_id_counts_as_absent() -> None:
    assert accept(events_body(ev(device_id=None)))


def test_mixed_problems_report_every_map() -> None:
    raw = events_body(
        ev(),  # 0 ok
        {"user_id": UID},  # 1 missing event_type
        ev(user_id="abc"),  # 2 short id
        ev(time="2024-01-01"),  # 3 bad time
        "not an object",  # 4
        ev(user_id="abc", device_id="none", event_properties=[1]),  # 5 three problems
    )
    assert reject(raw) == {
        "error": "Invalid field values on some events",
        "events_with_missing_fields": {"event_type": [1]},
        "events_with_invalid_fields": {
            "time": [3],
            "event": [4],
            "device_id": [5],
            "event_properties": [5],
        },
        "events_with_invalid_id_lengths": {"user_id": [2, 5]},
    }


def test_missing_and_short_ids_together_are_invalid_field_values() -> None:
    assert reject(events_body({"user_id": UID}, ev(user_id="abc"))) == {
        "error": "Invalid field values on some events",
        "events_with_missing_fields": {"event_type": [0]},
        "events_with_invalid_id_lengths": {"user_id": [1]},
    }


@pytest.mark.parametrize("time", [0, 1751387694837, 1751387694837.0, 1751387694837.5])
def test_valid_times(time: float) -> None:
    assert accept(events_body(ev(time=time))).events[0]["time"] == time


@pytest.mark.parametrize(
    "time", [-1, 4_102_444_800_000, 1e300, True, "1751387694837", "2025-07-01T00:00:00Z", [1]]
)
def test_invalid_times(time: object) -> None:
    assert reject(events_body(ev(time=time))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"time": [0]},
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("session_id", "123"),
        ("session_id", True),
        ("session_id", 1e300),
        ("session_id", 2**63),
        ("event_id", -1e19),
        ("event_id", "1"),
        ("event_id", [1]),
        ("event_properties", [1, 2]),
        ("event_properties", "x"),
        ("user_properties", 5),
        ("groups", ["a"]),
        ("group_properties", "x"),
        ("plan", "pro"),
        ("location_lat", "52.5"),
        ("location_lng", False),
        ("price", "9.99"),
        ("revenue", {"v": 1}),
        ("quantity", "2"),
        ("insert_id", 12345),
        ("platform", {"os": "iOS"}),
        ("ip", ["1.2.3.4"]),
        ("language", ["en"]),
        ("library", {"name": "x"}),
    ],
)
def test_field_type_rules(field: str, value: object) -> None:
    assert reject(events_body(ev(**{field: value}))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {field: [0]},
    }


def test_typed_fields_accept_their_types_and_null() -> None:
    event = ev(
        session_id=1751387694000,
        event_id=3,
        event_properties={"a": [1, {"b": None}]},
        user_properties={"$set": {"a": 1}},
        groups={"org": "acme"},
        group_properties={},
        plan={"branch": "main"},
        location_lat=52.5,
        location_lng=13,
        price=9.99,
        revenue=10,
        quantity=2,
        insert_id="abc",
        platform="Web",
        paying=True,
        unknown_key={"anything": [1]},
        country=None,
    )
    assert accept(events_body(event)).events == [event]


def nest(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


def test_property_depth_limit_is_40() -> None:
    assert accept(events_body(ev(event_properties=nest(40))))
    assert reject(events_body(ev(event_properties=nest(41)))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"event_properties": [0]},
    }


def test_arrays_count_as_depth() -> None:
    props: Any = {"k": [[[]]]}  # 4 levels
    for _ in range(36):
        props = {"k": props}
    assert accept(events_body(ev(user_properties=props)))
    assert reject(events_body(ev(user_properties={"k": props}))) == {
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {"user_properties": [0]},
    }


def test_long_strings_are_accepted_for_truncation_later() -> None:
    event = ev(event_type="e" * 5000, event_properties={"p": "v" * 5000})
    assert accept(events_body(event)).events == [event]


# -- parse_identify_form -------------------------------------------------------------------------


def identify_error(form: dict[str, str], *, group: bool = False) -> dict[str, object]:
    with pytest.raises(BadRequest) as info:
        parse_identify_form(form, group=group)
    return wire(info.value)


def test_identify_accepts_an_object_or_an_array() -> None:
    one = {"user_id": UID, "user_properties": {"$set": {"plan": "pro"}}}
    assert parse_identify_form(
        {"api_key": "k", "identification": orjson.dumps(one).decode()}, group=False
    ) == ("k", [one])
    two = [one, {"device_id": DID}]
    assert parse_identify_form(
        {"api_key": "k", "identification": orjson.dumps(two).decode()}, group=False
    ) == ("k", two)


@pytest.mark.parametrize("group", [False, True])
def test_identify_without_api_key_is_missing_field(group: bool) -> None:
    assert identify_error({"identification": "{}"}, group=group) == {
        "error": "Request missing required field",
        "missing_field": "api_key",
    }
    assert identify_error({"api_key": "", "identification": "{}"}, group=group)[
        "missing_field"
    ] == ("api_key")


@pytest.mark.parametrize(
    "form",
    [
        {"api_key": "k"},
        {"api_key": "k", "identification": ""},
        {"api_key": "k", "identification": "{not json"},
        {"api_key": "k", "identification": "42"},
        {"api_key": "k", "identification": '"text"'},
        {"api_key": "k", "identification": "[]"},
        {"api_key": "k", "identification": '[{"user_id": "abcdef"}, 1]'},
    ],
)
def test_missing_or_malformed_identification_is_missing_event(form: dict[str, str]) -> None:
    assert identify_error(form) == {"error": "missing_event"}
    assert identify_error(form, group=True) == {"error": "missing_event"}


def test_identify_applies_event_id_rules() -> None:
    items = [
        {"user_id": UID},
        {"user_properties": {"a": 1}},
        {"user_id": "abc"},
        {"device_id": "undefined"},
        {"user_id": UID, "user_properties": ["a"]},
    ]
    form = {"api_key": "k", "identification": orjson.dumps(items).decode()}
    assert identify_error(form) == {
        "error": "Invalid field values on some events",
        "events_with_missing_fields": {"user_id_or_device_id": [1]},
        "events_with_invalid_fields": {"device_id": [3], "user_properties": [4]},
        "events_with_invalid_id_lengths": {"user_id": [2]},
    }


def test_identify_does_not_require_event_type() -> None:
    form = {"api_key": "k", "identification": '{"device_id": "abcdef"}'}
    assert parse_identify_form(form, group=False) == ("k", [{"device_id": "abcdef"}])


def test_group_identify_requires_type_value_and_properties() -> None:
    ok = {"group_type": "org", "group_value": "acme", "group_properties": {}}
    items = [
        ok,
        {"group_value": "acme", "group_properties": {}},
        {"group_type": "org", "group_value": 5, "group_properties": {"$set": {"a": 1}}},
        {"group_type": "org", "group_value": "acme"},
        {"group_type": "", "group_value": "acme", "group_properties": []},
    ]
    form = {"api_key": "k", "identification": orjson.dumps(items).decode()}
    assert identify_error(form, group=True) == {
        "error": "Invalid field values on some events",
        "events_with_missing_fields": {"group_type": [1], "group_properties": [3]},
        "events_with_invalid_fields": {
            "group_value": [2],
            "group_type": [4],
            "group_properties": [4],
        },
    }
    form = {"api_key": "k", "identification": orjson.dumps(ok).decode()}
    assert parse_identify_form(form, group=True) == ("k", [ok])


def test_group_identify_does_not_need_user_ids() -> None:
    form = {
        "api_key": "k",
        "identification": '[{"group_type":"org","group_value":"a","group_properties":{}}]',
    }
    assert parse_identify_form(form, group=True)[1][0]["group_value"] == "a"


def test_too_many_identifications_is_payload_too_large() -> None:
    form = {"api_key": "k", "identification": orjson.dumps([{"user_id": UID}] * 2001).decode()}
    with pytest.raises(PayloadTooLarge):
        parse_identify_form(form, group=False)


# -- properties: arbitrary input only ever fails with the two wire errors ---------------------

EVENT_KEYS = [
    "event_type",
    "user_id",
    "device_id",
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
    "insert_id",
    "platform",
    "ip",
    "language",
]
id_like = st.sampled_from(["abcdef", "null", "abc", "", "00000000-0000-0000-0000-000000000000"])
events = st.dictionaries(
    st.sampled_from(EVENT_KEYS), json_values | id_like | st.integers(0, 2**42), max_size=8
)
docs = st.fixed_dictionaries(
    {},
    optional={
        "api_key": st.text(max_size=5) | json_values,
        "events": st.lists(events | json_values, max_size=5) | json_values,
        "options": st.fixed_dictionaries({"min_id_length": json_values}) | json_values,
        "client_upload_time": json_values | st.text(max_size=30),
    },
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(doc=docs)
def test_any_json_document_is_accepted_or_rejected_cleanly(doc: dict[str, Any]) -> None:
    error: BadRequest | PayloadTooLarge | None = None
    try:
        batch = parse_events_body(orjson.dumps(doc), max_bytes=HTTPAPI_MAX_BYTES)
    except (BadRequest, PayloadTooLarge) as exc:
        error = exc
    if error is None:
        assert batch.events == doc["events"]
        assert all(isinstance(e, dict) for e in batch.events)
    else:
        assert error.message
        assert set(error.extra) <= {
            "missing_field",
            "invalid_field",
            "events_with_missing_fields",
            "events_with_invalid_fields",
            "events_with_invalid_id_lengths",
        }


@given(raw=st.binary(max_size=200))
def test_any_bytes_are_accepted_or_rejected_cleanly(raw: bytes) -> None:
    with contextlib.suppress(BadRequest, PayloadTooLarge):
        parse_events_body(decode_body(raw, None, 1000), max_bytes=1000)


@given(form=st.dictionaries(st.sampled_from(["api_key", "identification"]), st.text(max_size=40)))
def test_any_identify_form_is_accepted_or_rejected_cleanly(form: dict[str, str]) -> None:
    for group in (False, True):
        with contextlib.suppress(BadRequest, PayloadTooLarge):
            parse_identify_form(form, group=group)


@given(items=st.lists(events | json_values, max_size=4), group=st.booleans())
def test_any_identification_json_is_accepted_or_rejected_cleanly(
    items: list[Any], group: bool
) -> None:
    form = {"api_key": "k", "identification": orjson.dumps(items).decode()}
    try:
        _, parsed = parse_identify_form(form, group=group)
    except (BadRequest, PayloadTooLarge):
        return
    assert parsed == items
