"""DSAR create-request validation and the read planner (which blocks, in how many reads)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, strategies as st

from swell.dsar import MAX_READ_BYTES, _reads, coalesce, parse_params
from swell.errors import BadRequest
from swell.model import Part, UserBlocks

DATES = {"startDate": "2024-01-01", "endDate": "2024-01-31"}


def test_amplitude_id_accepts_integers_and_numeric_strings():
    assert parse_params({"amplitudeId": 42, **DATES}).amplitude_id == 42
    assert parse_params({"amplitudeId": " 42 ", **DATES}).amplitude_id == 42


def test_empty_values_count_as_absent():
    params = parse_params({"userId": "alice", "amplitudeId": "", **DATES})
    assert (params.user_id, params.amplitude_id) == ("alice", None)


def test_both_ids_may_be_given():
    params = parse_params({"userId": "alice", "amplitudeId": 7, **DATES})
    assert (params.user_id, params.amplitude_id) == ("alice", 7)


def test_one_day_range_is_allowed():
    params = parse_params({"userId": "a", "startDate": "2024-02-29", "endDate": "2024-02-29"})
    assert (params.start_date, params.end_date) == ("2024-02-29", "2024-02-29")


@pytest.mark.parametrize("value", ["2024-1-01", "2024-01-01T00:00", "", None, 5, "yesterday"])
def test_start_date_must_be_a_calendar_date(value):
    with pytest.raises(BadRequest) as caught:
        parse_params({"userId": "a", "startDate": value, "endDate": "2024-01-02"})
    assert caught.value.extra == {"field": "startDate"}


def part(offsets: tuple[int, ...], size: int, hour: int = 10, seq: int = 0) -> Part:
    return Part(1, hour, seq, size, 0, 0, "", "", 0, offsets)


def test_reads_coalesce_adjacent_blocks_and_read_shared_blocks_once():
    p = part((0, 100, 250, 400, 600), 900)
    located = [
        UserBlocks(1, 10, p, (0, 1, 3), 3),
        UserBlocks(1, 11, p, (1, 4), 2),  # block 1 is shared by both ids
    ]
    assert _reads(located) == [(p.name, (0, 250)), (p.name, (400, 900))]


def test_reads_follow_part_order():
    late, early = part((0,), 10, hour=12), part((0,), 20, hour=11)
    located = [UserBlocks(1, 10, late, (0,), 1), UserBlocks(1, 10, early, (0,), 1)]
    assert [name for name, _ in _reads(located)] == [early.name, late.name]


@given(st.lists(st.integers(1, 3 * 1024 * 1024), min_size=1, max_size=30), st.data())
def test_coalesce_covers_exactly_the_wanted_blocks_in_bounded_reads(sizes, data):
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    blocks = [(offsets[i], offsets[i] + sizes[i]) for i in range(len(sizes))]
    wanted = sorted(data.draw(st.sets(st.sampled_from(range(len(blocks))), min_size=1)))
    chosen = [blocks[i] for i in wanted]
    merged = coalesce(chosen)
    # Every wanted block lies in exactly one read, and reads hold nothing else.
    for start, stop in chosen:
        assert sum(1 for a, b in merged if a <= start and stop <= b) == 1
    assert sum(b - a for a, b in merged) == sum(b - a for a, b in chosen)
    assert all(merged[i][1] <= merged[i + 1][0] for i in range(len(merged) - 1))
    # A read spans several blocks only while it stays within MAX_READ_BYTES.
    for a, b in merged:
        assert b - a <= MAX_READ_BYTES or (a, b) in chosen


def test_coalesced_reads_stay_within_one_mib():
    """Blob reads run on the event loop: a read spanning several blocks stays as small as the
    Export API's streaming chunks (1 MiB)."""
    blocks = [(i * 100_000, (i + 1) * 100_000) for i in range(40)]
    merged = coalesce(blocks)
    assert merged[0] == (0, 1_000_000)
    assert max(stop - start for start, stop in merged) <= 1 << 20
    assert sum(stop - start for start, stop in merged) == 4_000_000


def test_user_lines_finds_every_line_of_the_ids_in_storage_order() -> None:
    import orjson
    from isal import igzip

    from swell.dsar import user_lines

    records = [
        {"amplitude_id": 123, "event_properties": {}, "n": 0},
        {"amplitude_id": 1234, "event_properties": {}, "n": 1},  # a longer id: a candidate only
        {"amplitude_id": 9, "event_properties": {"amplitude_id": 123}, "n": 2},  # nested key
        {"amplitude_id": 9, "event_properties": {"text": '"amplitude_id":123'}, "n": 3},  # escaped
        {"amplitude_id": 77, "event_properties": {}, "n": 4},
        {"amplitude_id": 123, "event_properties": {}, "n": 5},
    ]
    lines = [orjson.dumps(r) for r in records]
    data = igzip.compress(b"\n".join(lines[:3]) + b"\n") + igzip.compress(
        b"\n".join(lines[3:]) + b"\n"
    )
    found = user_lines(data, {123, 77})
    assert found == [lines[0], lines[1], lines[2], lines[4], lines[5]]  # never the escaped one
    kept = [line for line in found if orjson.loads(line)["amplitude_id"] in {123, 77}]
    assert kept == [lines[0], lines[4], lines[5]]
    assert user_lines(data, {5}) == []


_ids = st.sampled_from([7, 77, 123, 1234, 12345678901])
_times = st.one_of(
    st.datetimes(min_value=datetime(2024, 12, 25), max_value=datetime(2025, 3, 5)).map(
        lambda t: t.strftime("%Y-%m-%d %H:%M:%S.%f")
    ),
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
)
_records = st.fixed_dictionaries(
    {
        "amplitude_id": st.one_of(_ids, _ids.map(str), st.none()),
        "event_time": _times,
        "event_properties": st.dictionaries(
            st.sampled_from(["amplitude_id", "event_time", "x"]),
            st.one_of(_ids, _times, st.text(max_size=20)),
            max_size=3,
        ),
    }
)


@given(
    records=st.lists(_records, max_size=40),
    wanted=st.sets(_ids, min_size=1, max_size=2),
    block=st.integers(1, 40),
)
def test_select_lines_keeps_exactly_the_users_lines_in_range_by_month(
    records: list[dict[str, object]], wanted: set[int], block: int
) -> None:
    """The byte search plus two-field decode agree with parsing every record in full."""
    import orjson
    from isal import igzip

    from swell.dsar import select_lines

    lines = [orjson.dumps(r) for r in records]
    data = b"".join(
        igzip.compress(b"".join(line + b"\n" for line in lines[i : i + block]))
        for i in range(0, len(lines), block)
    )
    start, end = "2025-01-01", "2025-02-28"
    expected: dict[str, list[bytes]] = {}
    for line, record in zip(lines, records, strict=True):
        aid, when = record["amplitude_id"], record["event_time"]
        in_range = isinstance(when, str) and start <= when[:10] <= end
        if type(aid) is int and aid in wanted and in_range:
            assert isinstance(when, str)
            expected.setdefault(when[:7], []).append(line)
    assert select_lines(data, wanted, start, end) == expected
