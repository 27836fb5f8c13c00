from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from swell.generate import generate_records
from swell.model import EXPORT_KEYS, format_ts, parse_ts

END = datetime(2025, 7, 2, tzinfo=UTC)
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}000$")
TIME_KEYS = (
    "client_event_time",
    "client_upload_time",
    "event_time",
    "processed_time",
    "server_received_time",
    "server_upload_time",
)


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(generate_records(636686, events=20_000, days=7, users=2_000, seed=7, end=END))


def test_record_count_is_exact() -> None:
    for events in (0, 1, 999):
        assert sum(1 for _ in generate_records(1, events=events, days=1, users=5, end=END)) == (
            events
        )


def test_every_record_has_the_55_keys_in_sorted_order(records: list[dict[str, Any]]) -> None:
    assert list(EXPORT_KEYS) == sorted(EXPORT_KEYS)
    for record in records:
        assert tuple(record) == EXPORT_KEYS
    line = orjson.dumps(records[0])
    assert line.startswith(b'{"$insert_id":"')
    assert b',"version_name":' in line
    assert line.index(b'"uuid":') > line.index(b'"user_properties":')


def test_server_upload_time_never_decreases(records: list[dict[str, Any]]) -> None:
    uploads = [parse_ts(record["server_upload_time"]) for record in records]
    assert uploads == sorted(uploads)


def test_uploads_span_the_requested_days(records: list[dict[str, Any]]) -> None:
    start = END - timedelta(days=7)
    uploads = [parse_ts(record["server_upload_time"]) for record in records]
    assert all(start <= upload < END for upload in uploads)
    assert uploads[0] < start + timedelta(hours=12)
    assert uploads[-1] > END - timedelta(hours=12)
    assert len({upload.date() for upload in uploads}) == 7


def test_end_defaults_to_now_rounded_down_to_the_hour() -> None:
    before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    uploads = [
        parse_ts(record["server_upload_time"])
        for record in generate_records(1, events=50, days=1, users=3)
    ]
    after = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert all(before - timedelta(days=1) <= upload < after for upload in uploads)


def test_timestamps_follow_amplitudes_chain(records: list[dict[str, Any]]) -> None:
    adjusted = late = 0
    for record in records:
        assert all(TS.match(record[key]) for key in TIME_KEYS), record
        t = {key: parse_ts(record[key]) for key in TIME_KEYS}
        assert t["client_event_time"] <= t["client_upload_time"]
        received, uploaded = t["server_received_time"], t["server_upload_time"]
        assert received <= uploaded <= received + timedelta(milliseconds=10)
        assert uploaded < t["processed_time"] < uploaded + timedelta(seconds=1)
        # event_time = client_event_time + (server_received_time - client_upload_time),
        # unless that difference is under 60 s.
        skew = received - t["client_upload_time"]
        if abs(skew) < timedelta(seconds=60):
            assert record["event_time"] == record["client_event_time"]
        else:
            assert t["event_time"] == t["client_event_time"] + skew
            adjusted += 1
        if t["client_upload_time"] - t["client_event_time"] > timedelta(seconds=60):
            late += 1
    assert adjusted > 0
    assert 0.005 < late / len(records) < 0.1


def test_times_are_exact_on_both_sides_of_a_minute() -> None:
    # Dense uploads: many records have times in the minute before (or after) their upload's
    # minute, which take another formatting path than times within it.
    records = list(generate_records(3, events=30_000, days=1, users=200, seed=11, end=END))
    minutes: Counter[int] = Counter()  # -1, 0, 1: before, in, after the upload's minute
    for record in records:
        upload_minute = parse_ts(record["server_upload_time"]).replace(second=0, microsecond=0)
        for key in TIME_KEYS:
            value = record[key]
            assert format_ts(parse_ts(value)) == value, (key, value)
            minute = parse_ts(value).replace(second=0, microsecond=0)
            minutes[(minute > upload_minute) - (minute < upload_minute)] += 1
    assert minutes[-1] > 1000  # earlier minute (events, client uploads)
    assert minutes[0] > 100_000  # the upload's own minute
    assert minutes[1] > 1000  # later minute (processed_time)


def test_server_side_senders_upload_at_receive_time(records: list[dict[str, Any]]) -> None:
    server_side = [r for r in records if r["library"] in ("http/2.0", "batch/1.0")]
    assert server_side
    for record in server_side:
        assert record["client_upload_time"] == record["server_received_time"]
        assert record["session_id"] == -1
        assert record["platform"] is None
    batch = next(r for r in server_side if r["library"] == "batch/1.0")
    assert batch["data"]["path"] == "/batch"


def test_users_are_zipf_skewed(records: list[dict[str, Any]]) -> None:
    per_user = Counter(record["amplitude_id"] for record in records)
    counts = sorted(per_user.values(), reverse=True)
    assert counts[0] > 20 * statistics.median(counts)
    assert sum(counts[:20]) > 0.2 * len(records)  # the top 1% of users
    assert len(counts) > 500  # and a long tail


def test_user_fields_are_stable_per_user_and_device(records: list[dict[str, Any]]) -> None:
    users: dict[int, set[Any]] = defaultdict(set)
    devices: dict[str, set[Any]] = defaultdict(set)
    for record in records:
        users[record["amplitude_id"]].add((record["user_id"], record["country"], record["city"]))
        devices[record["device_id"]].add(
            (record["amplitude_id"], record["platform"], record["library"], record["os_name"])
        )
    assert all(len(values) == 1 for values in users.values())
    assert all(len(values) == 1 for values in devices.values())
    assert len(devices) > len(users)  # some users have two devices
    identified = sum(1 for values in users.values() if next(iter(values))[0] is not None)
    assert 0.65 < identified / len(users) < 0.95
    assert all(record["amplitude_id"] >= 10**12 for record in records)


def test_event_ids_increase_per_device(records: list[dict[str, Any]]) -> None:
    last: dict[str, int] = {}
    for record in records:
        device = record["device_id"]
        assert record["event_id"] == last.get(device, 0) + 1
        last[device] = record["event_id"]


def test_sdk_sessions_start_with_a_session_event(records: list[dict[str, Any]]) -> None:
    sessions: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record["session_id"] != -1:
            sessions[record["device_id"], record["session_id"]].append(record)
    assert sessions
    starts = 0
    for (_, session_id), events in sessions.items():
        first = parse_ts(events[0]["client_event_time"])
        assert session_id <= (first - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        starts += events[0]["event_type"] == "[Amplitude] Start Session"
    assert starts > 0.5 * len(sessions)
    assert any(len(events) > 5 for events in sessions.values())


def test_event_types_are_skewed_and_carry_properties(records: list[dict[str, Any]]) -> None:
    kinds = Counter(record["event_type"] for record in records)
    assert kinds.most_common(1)[0][0] == "Page Viewed"
    assert kinds["Purchase"] > 0
    assert kinds["Page Viewed"] > 10 * kinds["Purchase"]
    purchase = next(r for r in records if r["event_type"] == "Purchase")
    assert isinstance(purchase["event_properties"]["price"], float)
    assert isinstance(purchase["event_properties"]["quantity"], int)


def test_fixed_fields_match_the_export_record(records: list[dict[str, Any]]) -> None:
    ids = set()
    for record in records[:2000]:
        assert record["app"] == 636686
        assert record["data_type"] == "event"
        assert record["data"]["path"] in ("/2/httpapi", "/batch")
        assert record["data"]["group_first_event"] == {}
        assert record["plan"] == {}
        assert record["sample_rate"] is None
        assert isinstance(record["groups"], dict)
        assert isinstance(record["user_properties"], dict)
        assert UUID4.match(record["uuid"])
        assert UUID4.match(record["$insert_id"])
        assert UUID4.match(record["device_id"])
        ids.add(record["uuid"])
    assert len(ids) == 2000


def test_output_is_deterministic_per_seed() -> None:
    def run(seed: int) -> list[bytes]:
        records = generate_records(5, events=500, days=2, users=300, seed=seed, end=END)
        return [orjson.dumps(record) for record in records]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="events"):
        generate_records(1, events=-1, days=1, users=1)
    with pytest.raises(ValueError, match="days"):
        generate_records(1, events=1, days=0, users=1)
    with pytest.raises(ValueError, match="users"):
        generate_records(1, events=1, days=1, users=0)
